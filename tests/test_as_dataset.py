"""Tests for subnet.data.as_dataset: data given in memory, as Keras gives it, converted as a .npz
file's arrays are, and accepted alike by every entry point that takes a ``dataset``."""

from __future__ import annotations

import numpy as np
import pytest

import subnet
from subnet.data import Dataset, as_dataset, load_dataset
from subnet.errors import DataError, InputError, InputTypeError
from tests.helpers import tiny_dense_task

tf = pytest.importorskip("tensorflow")

_RNG = np.random.default_rng(0)


def _images_uint8():
    """Keras's mnist.load_data() form: uint8 (N, 28, 28) images 0-255, uint8 labels."""
    return ((_RNG.integers(0, 256, (12, 28, 28), dtype=np.uint8),
             _RNG.integers(0, 10, 12).astype(np.uint8)),
            (_RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8),
             np.arange(5, dtype=np.uint8)))


def _images_float_column_labels():
    """Float NHWC images in [0, 1] and (N, 1) labels (as CIFAR-10's load_data() gives them)."""
    return ((_RNG.random((10, 6, 6, 3)), _RNG.integers(0, 4, (10, 1))),
            (_RNG.random((4, 6, 6, 3)), np.array([[0], [1], [2], [3]])))


def _tokens():
    return ((_RNG.integers(0, 50, (9, 7)), _RNG.integers(0, 2, 9)),
            (_RNG.integers(0, 50, (3, 7)), np.array([0, 1, 1])))


def _features_one_hot():
    """Float64 feature vectors and one-hot labels of 5 classes (the largest label is 3)."""
    def one_hot(labels):
        return np.eye(5, dtype=np.float32)[labels]
    return ((_RNG.normal(size=(8, 4)), one_hot(np.array([0, 1, 2, 3, 0, 1, 2, 3]))),
            (_RNG.normal(size=(3, 4)), one_hot(np.array([3, 2, 1]))))


FORMS = {"uint8 images": _images_uint8, "float images, (N, 1) labels":
         _images_float_column_labels, "tokens": _tokens, "features, one-hot": _features_one_hot}


def _from_npz(tmp_path, data) -> Dataset:
    (x_train, y_train), (x_test, y_test) = data
    path = tmp_path / "same.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return load_dataset(path)


def _assert_same(got: Dataset, want: Dataset) -> None:
    for key in ("x_train", "y_train", "x_test", "y_test"):
        a, b = getattr(got, key), getattr(want, key)
        assert a.dtype == b.dtype, key
        np.testing.assert_array_equal(a, b, err_msg=key)
    assert (got.layout, got.num_classes) == (want.layout, want.num_classes)
    assert got.fingerprint() == want.fingerprint()


@pytest.mark.parametrize("form", FORMS)
def test_keras_arrays_give_what_the_npz_route_gives(tmp_path, form):
    data = FORMS[form]()
    got = as_dataset(data)
    _assert_same(got, _from_npz(tmp_path, data))
    assert got.name == "arrays" and got.source == "arrays given in memory"
    assert as_dataset(data, name="mine").name == "mine"


def test_keras_mnist_arrays_are_scaled_to_floats_with_a_channel():
    data = _images_uint8()
    got = as_dataset(data)
    assert got.x_train.shape == (12, 28, 28, 1) and got.x_train.dtype == np.float32
    np.testing.assert_array_equal(got.x_test[..., 0], data[1][0] / np.float32(255))
    assert got.y_test.dtype == np.int64 and got.num_classes == 10


def test_a_dataset_is_returned_as_it_is():
    _, data = tiny_dense_task()
    assert as_dataset(data) is data


def test_lists_and_tensors_are_taken_like_tuples_of_arrays(tmp_path):
    (x_train, y_train), (x_test, y_test) = data = _images_uint8()
    want = _from_npz(tmp_path, data)
    _assert_same(as_dataset([[x_train, y_train], [x_test, y_test]]), want)
    _assert_same(as_dataset(((tf.constant(x_train), tf.constant(y_train)),
                             (tf.constant(x_test), tf.constant(y_test)))), want)


def test_layout_names_what_3d_floats_are(tmp_path):
    x = _RNG.normal(size=(6, 5, 2)).astype(np.float32)  # sequences: not images in [0, 1]
    data = ((x, np.arange(6) % 2), (x[:2], np.array([0, 1])))
    with pytest.raises(DataError, match=r"`dataset`: x_train: float images must lie in \[0, 1\]"
                                        r".*give subnet\.data\.as_dataset\(\.\.\., "
                                        r"layout='sequences'\)"):
        as_dataset(data)
    got = as_dataset(data, layout="sequences")
    assert got.layout == "sequences" and got.x_train.shape == (6, 5, 2)
    path = tmp_path / "seq.npz"
    np.savez(path, x_train=x, y_train=np.arange(6) % 2, x_test=x[:2], y_test=[0, 1],
             layout="sequences")
    _assert_same(got, load_dataset(path))


@pytest.mark.parametrize("batch", [None, 5, "drop_remainder"])
@pytest.mark.parametrize("form", ["uint8 images", "features, one-hot"])
def test_tf_data_pairs_give_what_the_arrays_give(form, batch):
    data = FORMS[form]()

    def split(x, y):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if batch == "drop_remainder":  # batches of one known size; an odd last example left
            return ds.batch(2, drop_remainder=True)
        return ds if batch is None else ds.batch(batch)

    got = as_dataset((split(*data[0]), split(*data[1])))
    if batch == "drop_remainder":
        data = tuple((x[:len(x) // 2 * 2], y[:len(y) // 2 * 2]) for x, y in data)
    want = as_dataset(data)
    _assert_same(got, want)
    assert got.source == "tf.data.Datasets given in memory"


def test_a_tf_data_split_and_an_array_split_mix():
    (x_train, y_train), test = data = _images_uint8()
    got = as_dataset((tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(5), test))
    _assert_same(got, as_dataset(data))
    assert got.source == "arrays and tf.data.Datasets given in memory"


@pytest.mark.parametrize("value, received", [
    ("mnist", "dataset='mnist'"),
    (None, "dataset=None"),
    ((np.zeros((4, 3)), np.zeros(4)), r"dataset=\(array\(shape=\(4, 3\), dtype=float64\), "
                                      r"array\(shape=\(4,\), dtype=float64\)\)"),
    ([np.zeros((4, 3))] * 3, r"dataset=\[array"),
    (((np.zeros((4, 3)),), (np.zeros((4, 3)), np.zeros(4))), r"dataset=\(\(array.*,\), "),
    (((1, 2), (3, 4)), r"dataset=\(\(1, 2\), \(3, 4\)\)"),
    ({"x_train": np.zeros(3)}, "dataset=a dict"),
])
def test_other_forms_are_refused_in_one_line_naming_what_came(value, received):
    with pytest.raises(InputTypeError, match=r"^Invalid value received for argument `dataset`\. "
                                             r"Expected a subnet Dataset .*load_data\(\).* "
                                             r"tf\.data\.Datasets .*Received: " + received) as err:
        as_dataset(value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 500


def test_a_single_tf_dataset_is_refused():
    (x, y), _ = _images_uint8()
    with pytest.raises(InputTypeError, match=r"Received: dataset=tf\.data\.Dataset$"):
        as_dataset(tf.data.Dataset.from_tensor_slices((x, y)))


@pytest.mark.parametrize("change, match", [
    (lambda d: ((d[0][0], d[0][1][:5]), d[1]),
     r"^`dataset`: x_train and y_train must have the same length, got 12 images and 5 labels\.$"),
    (lambda d: ((d[0][0][:, :20], d[0][1]), d[1]),
     r"`dataset`: x_train and x_test must hold images of the same \(H, W, C\), got \(20, 28, 1\) "
     r"and \(28, 28, 1\)"),
    (lambda d: (d[0], (d[1][0], np.full(5, -1))),
     r"`dataset`: y_test: labels must be class indices >= 0"),
    (lambda d: (d[0], (d[1][0], np.eye(5) * 2)), r"`dataset`: y_test: 2-D labels must be one-hot"),
    (lambda d: (d[0], (d[1][0].astype(object), d[1][1])),
     r"`dataset`: x_test holds Python objects \(dtype object\)"),
    (lambda d: ((np.zeros((12, 2, 2, 2, 2)), d[0][1]), d[1]),
     r"`dataset`: x_train has shape \(12, 2, 2, 2, 2\), but the layout is 'images' \(x_test is "
     r"a 3-D array, read as images when no layout is given\)"),
])
def test_arrays_that_do_not_convert_are_refused_naming_the_array(change, match):
    with pytest.raises(DataError, match=match) as err:
        as_dataset(change(_images_uint8()))
    assert "\n" not in str(err.value)


def test_options_are_checked():
    data = _images_uint8()
    with pytest.raises(InputError, match=r"argument `layout`\. Expected one of 'images'"):
        as_dataset(data, layout="pictures")
    with pytest.raises(InputError, match=r"`max_bytes` must be a positive int"):
        as_dataset(data, max_bytes=0)
    with pytest.raises(InputTypeError, match=r"argument `name`\. Expected a non-empty str"):
        as_dataset(data, name="")


def test_arrays_above_the_data_limit_are_refused_before_conversion(monkeypatch):
    data = _images_uint8()
    nbytes = sum(a.nbytes for pair in data for a in pair)  # as given: uint8, not float32
    assert as_dataset(data, max_bytes=nbytes).x_train.shape == (12, 28, 28, 1)
    with pytest.raises(DataError, match=rf"^`dataset`: the arrays hold {nbytes:,} bytes, above "
                                        rf"the limit of {nbytes - 1:,} \(the max_bytes given"):
        as_dataset(data, max_bytes=nbytes - 1)
    monkeypatch.setattr(subnet.data.arrays, "MAX_BYTES", nbytes - 1)
    with pytest.raises(DataError, match=r"\(subnet\.data\.MAX_BYTES; if you trust the data, "
                                        r"raise it with subnet\.data\.as_dataset\(data, "
                                        r"max_bytes=N\)"):
        as_dataset(data)
    (x_train, y_train), (x_test, y_test) = data
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(4)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test))
    with pytest.raises(InputError, match=r"`dataset`'s test split is a tf\.data\.Dataset of more "
                                         r"than [\d,]+ bytes of examples and labels \(the limit "
                                         r"less [\d,]+ bytes of the other split\)"):
        as_dataset((train, test))


def test_tf_data_that_is_not_pairs_or_is_empty_is_refused():
    (x, y), test = _images_uint8()
    with pytest.raises(InputError, match=r"`dataset`'s training split is a tf\.data\.Dataset "
                                         r"whose elements are not \(examples, labels\) pairs"):
        as_dataset((tf.data.Dataset.from_tensor_slices(x), test))
    with pytest.raises(InputError, match=r"the tf\.data\.Dataset given for `dataset`'s test split "
                                         r"is empty"):
        as_dataset(((x, y), tf.data.Dataset.from_tensor_slices(test).take(0)))


def _entry_points(model):
    """Each entry point that takes a whole data set, called with ``dataset`` alone varying."""
    from subnet.baselines.tfmot import start_magnitude_prune

    return {
        "finetune": lambda d: subnet.finetune(model, d, examples=1, progress=False),
        "compare": lambda d: subnet.compare(model, d, progress=False),
        "compare_gradual": lambda d: subnet.compare_gradual(
            model, d, ["magnitude"], subnet.Protocol.preset("quick"), progress=False),
        "prune_gradually": lambda d: subnet.prune_gradually(model, d, "magnitude", [0.5]),
        "start_magnitude_prune": lambda d: start_magnitude_prune(model, d, sparsity=[0.5],
                                                                 examples=1),
        "validation_split": lambda d: subnet.validation_split(d, 10),
    }


@pytest.mark.parametrize("entry", ["finetune", "compare", "compare_gradual", "prune_gradually",
                                   "start_magnitude_prune", "validation_split"])
def test_every_entry_point_refuses_other_forms_as_as_dataset_does(entry):
    model, _ = tiny_dense_task()
    with pytest.raises(InputTypeError, match=r"^Invalid value received for argument `dataset`\. "
                                             r"Expected a subnet Dataset .*Received: "
                                             r"dataset='mnist'$"):
        _entry_points(model)[entry]("mnist")


def test_validation_split_takes_keras_arrays():
    _, data = tiny_dense_task()
    keras_form = ((data.x_train, data.y_train), (data.x_test, data.y_test))
    train, (x_val, y_val), info = subnet.validation_split(keras_form, 10, seed=1)
    want_train, (want_x, want_y), want_info = subnet.validation_split(data, 10, seed=1)
    np.testing.assert_array_equal(train.x_train, want_train.x_train)
    np.testing.assert_array_equal(x_val, want_x)
    np.testing.assert_array_equal(y_val, want_y)
    assert info == want_info


def test_finetune_end_to_end_with_keras_arrays_tunes_as_with_the_dataset():
    """finetune on ((x_train, y_train), (x_test, y_test)) trains and measures exactly as on the
    Dataset of the same arrays."""
    model, data = tiny_dense_task()
    weights = model.get_weights()
    keras_form = ((data.x_train, data.y_train), (data.x_test, data.y_test))
    got = subnet.finetune(model, keras_form, examples=64, batch_size=16, progress=False)
    tuned = model.get_weights()
    model.set_weights(weights)
    want = subnet.finetune(model, data, examples=64, batch_size=16, progress=False)
    assert got.examples_seen == want.examples_seen == 64
    assert got.accuracy_before == want.accuracy_before
    assert got.accuracy_after == pytest.approx(want.accuracy_after, abs=1 / 30)
    assert not all(np.array_equal(a, b) for a, b in zip(weights, tuned, strict=True))
    for a, b in zip(tuned, model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
