"""Sites, the two masked-evaluation backends, record_masks and mc_dropout, on real trained models.

The models are small and trained for one epoch on a slice of MNIST, so that their outputs are
those of real networks (confident, saturated softmax) rather than of random weights.
"""

import ast
import re
import warnings
from pathlib import Path

import keras
import networkx as nx
import numpy as np
import pytest

import subnet
from subnet import MaskRecord, RecordError, record_masks, sample_masks, sites
from subnet.engine.chain import analyse_chain
from subnet.engine.fast import FastBackend
from subnet.engine.reference import ReferenceBackend
from subnet.models import seed_cnn
from tests.helpers import RATES, conv1d_model, conv_bn_model, dense_only_model

# ---------------------------------------------------------------------------- sites

def test_seed_cnn_sites():
    table = sites(seed_cnn())
    assert table.names == ["conv1", "conv2", "dense"]
    assert list(table.units) == [20, 50, 500] and table.n_units == 570
    assert [s.keep for s in table] == [0.5, 0.5, 0.5]
    # The mask point is after the per-channel layers: dropout and pooling.
    assert [s.mask_layer for s in table] == ["pool1", "pool2", "drop3"]
    assert [s.kind for s in table] == ["conv2d", "conv2d", "dense"]
    assert list(table.offsets) == [0, 20, 70, 570]
    assert table.split(np.arange(570))["conv2"].tolist() == list(range(20, 70))


def test_sites_reads_rates_and_always_on():
    table = sites(seed_cnn(32, (0.1, 0.2, 0.9), always_on_dropout=True))
    assert [s.keep for s in table] == pytest.approx([0.9, 0.8, 0.1])
    assert all(s.always_on for s in table)
    assert [s.dropout_rate for s in table] == pytest.approx([0.1, 0.2, 0.9])


def test_sites_of_the_blogs_keras2_models(keras2_dir):
    lambda_model = subnet.load_model(keras2_dir / "blog_lambda.h5", trust=True)
    table = sites(lambda_model)
    assert [s.keep for s in table] == [0.5, 0.75, 0.5]
    assert all(s.always_on for s in table)
    baked = sites(subnet.load_model(keras2_dir / "blog_training_true.h5"))
    assert [(s.units, s.keep, s.always_on) for s in baked] == [(4, 0.5, True), (6, 0.5, True),
                                                               (32, 0.5, True)]


def test_sites_rate_overrides():
    model = seed_cnn(32)
    assert [s.keep for s in sites(model, rate=0.25)] == [0.75, 0.75, 0.75]
    assert [s.keep for s in sites(model, rate={"dense": 0.9})] == pytest.approx([0.5, 0.5, 0.1])


def test_sites_need_a_rate_where_no_dropout_follows():
    with pytest.raises(ValueError, match=r"Site 'c1' has no Dropout.*rate=R"):
        sites(conv_bn_model())
    assert [s.keep for s in sites(conv_bn_model(), rate=0.5)] == [0.5, 0.5]
    assert [s.mask_layer for s in sites(conv_bn_model(), rate=0.5)][0].startswith("max_pooling2d")


@pytest.mark.parametrize("rate, match", [
    (1.0, r"\[0, 1\)"), (-0.1, r"\[0, 1\)"), ({"nope": 0.5}, "not sites"), ("0.5", "rate"),
])
def test_sites_rejects_bad_rates(rate, match):
    with pytest.raises(ValueError, match=match):
        sites(seed_cnn(16), rate=rate)


def test_model_without_sites():
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no maskable site"):
        sites(model)


def test_unsupported_layer_between_sites_is_named():
    inputs = keras.Input((20,))
    x = keras.layers.Dense(8)(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    with pytest.raises(ValueError, match=r"'ln' \(LayerNormalization\).*normalises across "
                                         r"channels.*masking it is not deleting it"):
        sites(model, rate=0.5)


def test_a_residual_sum_couples_its_producers_into_one_site():
    inputs = keras.Input((20,))
    a = keras.layers.Dense(20, name="a")(inputs)
    b = keras.layers.Dense(20, name="b")(a)
    x = keras.layers.Add(name="add")([a, b])
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    table = sites(model, rate=0.5)
    # b reads a's channels (its own site would be b's outputs), but a and b write the same
    # stream, so channel c of a and of b is one unit: one coupled site of 20 units.
    assert table.names == ["a"] and table[0].kind == "coupled" and table[0].units == 20


def test_softmax_between_sites_is_refused():
    inputs = keras.Input((20,))
    x = keras.layers.Dense(8)(inputs)
    x = keras.layers.Activation("softmax", name="soft")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    with pytest.raises(ValueError, match="'soft'.*softmax across channels"):
        sites(model, rate=0.5)


# ---------------------------------------------------------------------------- backends

@pytest.mark.parametrize("name", list(RATES))
def test_fast_and_reference_backends_agree(trained, mnist, name):
    chain = analyse_chain(trained[name], RATES[name])
    masks = sample_masks(chain.table.unit_keep(), seed=1, indices=range(24))
    masks[0] = True  # the full network ...
    masks[1] = False  # ... and the empty one
    x = mnist.x_test[:40]
    reference = ReferenceBackend(chain).probabilities(x, masks)
    fast = FastBackend(chain).probabilities(x, masks)
    assert reference.shape == (24, 40, 10)
    np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(reference.sum(axis=-1), 1.0, atol=1e-5)


UNTRAINED = {"dense": lambda: dense_only_model(), "dense_logits": lambda: dense_only_model(True),
             "conv": lambda: seed_cnn(16, conv_filters=(4, 6), seed=1), "conv_bn": conv_bn_model,
             "conv1d": conv1d_model}


@pytest.mark.parametrize("name", list(RATES))
def test_fast_and_reference_backends_agree_untrained(name):
    """The same check without training (``make test-fast``): random weights, random inputs."""
    chain = analyse_chain(UNTRAINED[name](), RATES[name])
    masks = sample_masks(chain.table.unit_keep(), seed=2, indices=range(12))
    masks[0], masks[1] = True, False
    x = np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32)
    reference = ReferenceBackend(chain).probabilities(x, masks)
    fast = FastBackend(chain).probabilities(x, masks)
    assert reference.shape == (12, 20, 10) and reference[0].std(axis=0).max() > 1e-3
    np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=0)


def _softmax_layer_model():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(12, activation="relu", name="h")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probs")(x), name="softmax_layer")


def test_fast_backend_runs_a_softmax_output_layer():
    model = _softmax_layer_model()
    chain = analyse_chain(model)
    assert chain.probabilities
    masks = sample_masks(chain.table.unit_keep(), seed=0, indices=range(6))
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
    fast = FastBackend(chain).probabilities(x, masks)
    np.testing.assert_allclose(fast, ReferenceBackend(chain).probabilities(x, masks), atol=1e-5)
    np.testing.assert_allclose(fast.sum(axis=-1), 1.0, atol=1e-5)  # not a softmax of softmax
    masks[0] = True
    full = FastBackend(chain, rescale=False).probabilities(x, masks[:1])[0]
    np.testing.assert_allclose(full, model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("tail", ["dropout", "softmax_layer_then_dropout", "logits_dropout"])
def test_a_softmax_classifier_followed_by_dropout_outputs_probabilities(tail):
    """Dropout after the softmax changes nothing at inference: no second softmax."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(12, activation="relu", name="h")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(10, activation=None if tail != "dropout" else "softmax")(x)
    if tail == "softmax_layer_then_dropout":
        x = keras.layers.Softmax()(x)
    model = keras.Model(inputs, keras.layers.Dropout(0.1)(x))
    chain = analyse_chain(model)
    assert chain.probabilities == (tail != "logits_dropout")
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    if not chain.probabilities:
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(expected))
    full = np.ones((1, chain.table.n_units), bool)
    for backend in (FastBackend(chain, rescale=False), ReferenceBackend(chain, rescale=False)):
        np.testing.assert_allclose(backend.probabilities(x, full)[0], expected, atol=1e-5)


def test_a_fallback_to_the_graph_backend_is_recorded_without_a_warning(tmp_path):
    inputs = keras.Input((28, 28))
    x = keras.layers.Conv1D(4, 3, name="c")(inputs)
    x = keras.layers.Conv1D(3, 3, padding="causal", name="k")(x)  # the fast backend cannot
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name="causal")
    x_test = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    with warnings.catch_warnings():  # the graph backend is as good: nothing to warn about
        warnings.simplefilter("error", RuntimeWarning)
        record = record_masks(model, x_test, np.arange(5), 3, rate=0.5, out=tmp_path / "r",
                              progress=False)
    assert record.meta["backend"] == "graph"
    assert record.meta["backend_requested"] == "auto"
    assert "causal padding" in record.meta["backend_fallback"]
    with pytest.raises(ValueError, match="causal padding"):
        subnet.engine.make_backend(analyse_chain(model, 0.5), "fast")


def _operations_model(between_sites: bool):
    """``x / 255.0`` before the first site, and (``between_sites``) ``relu(x + 1.0)`` after it:
    Keras operations written on tensors rather than layers."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs / 255.0)
    if between_sites:
        x = keras.ops.relu(x + 1.0)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, activation="relu", name="d1")(x)
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("between_sites", [False, True])
def test_keras_operations_in_a_chain(between_sites):
    """Before the first site an operation is part of the prefix, which the fast backend runs
    as a sub-model; between sites it takes the graph backend (it was an internal error)."""
    chain = analyse_chain(_operations_model(between_sites))
    assert chain.is_chain is not between_sites
    x = np.random.default_rng(1).random((6, 8, 8, 1), dtype=np.float32) * 255
    masks = sample_masks(chain.table.unit_keep(), seed=0, indices=range(6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = subnet.engine.make_backend(chain, "auto")
    assert backend.name == ("graph" if between_sites else "fast")
    # the graph backend is the right one for such a model: no warning about the choice
    assert not [w for w in caught if "backend" in str(w.message)]
    if between_sites:  # the reason is kept (records store it)
        assert re.search(r"'add(_\d+)?' \(Add\) is a Keras operation", backend.fallback_reason)
    np.testing.assert_allclose(backend.probabilities(x, masks),
                               ReferenceBackend(chain).probabilities(x, masks), atol=1e-5)


def test_a_model_the_fast_backend_runs_records_no_fallback(tmp_path):
    model = _softmax_layer_model()
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        record = record_masks(model, x, np.arange(5), 3, out=tmp_path / "r", progress=False)
    assert record.meta["backend"] == "fast" and record.meta["backend_fallback"] is None


def _imports(path):
    """(imported module, imported name or None) for every import in a file, nested ones too."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield from ((node.module, alias.name) for alias in node.names)


def _modules():
    root = Path(subnet.__file__).parent
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path


def test_subnet_modules_import_one_way():
    """No import cycle between subnet's modules, counting imports inside functions (which hide
    cycles from Python but not from the reader). A submodule importing its own package's
    ``__init__`` is left out, and so is the lazy top-level ``subnet`` package."""
    modules = dict(_modules())
    graph = nx.DiGraph()
    for name, path in modules.items():
        for module, attribute in _imports(path):
            # Importing a.b.c runs a/__init__ and a/b/__init__ first.
            parts = f"{module}.{attribute}".split(".")
            for target in (".".join(parts[:k]) for k in range(2, len(parts) + 1)):
                if target in modules and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    assert [cycle for cycle in nx.simple_cycles(graph) if len(cycle) > 1] == []


# Private names still imported across modules by files being switched to the public ones.
# TODO(remove) each entry once its file imports the public name.
PENDING_PRIVATE: set = set()  # every cross-module name has a public home


def _same_subpackage(importer: str, module: str, files: dict) -> bool:
    """Whether both modules belong to one package below ``subnet`` (a folder of modules)."""
    def package(name):
        path = files.get(name)
        if path is None or not name.startswith("subnet."):
            return None
        return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    a, b = package(importer), package(module)
    return a is not None and a == b and a != "subnet"


def test_no_private_name_is_imported_from_another_module():
    root = Path(subnet.__file__).parent.parent
    files = dict(_modules())
    files.update({f"analyses.{p.stem}": p for p in (root / "analyses").glob("*.py")})
    found = {(name, module, attribute) for name, path in files.items()
             for module, attribute in _imports(path)
             if module.startswith("subnet") and attribute and attribute.startswith("_")
             and not attribute.startswith("__") and module != name}
    # subnet.runtime, subnet.cli, subnet._io, ... are private *modules* of the package, shared
    # on purpose; what must not cross is a module's own private name, except between the
    # modules of one sub-package (subnet.analyze.*, subnet.data.*, ...), which is its unit.
    found = {f for f in found if f"{f[1]}.{f[2]}" not in files
             and not _same_subpackage(f[0], f[1], files)}
    assert found <= PENDING_PRIVATE, sorted(found - PENDING_PRIVATE)


@pytest.mark.parametrize("name", ["conv", "conv_bn"])
def test_full_mask_without_rescale_is_the_model(trained, mnist, name):
    chain = analyse_chain(trained[name], RATES[name])
    masks = np.ones((1, chain.table.n_units), bool)
    x = mnist.x_test[:16]
    expected = trained[name].predict(x, verbose=0)
    if not chain.probabilities:
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(expected))
    for backend in (ReferenceBackend(chain, rescale=False), FastBackend(chain, rescale=False)):
        np.testing.assert_allclose(backend.probabilities(x, masks)[0], expected, atol=1e-5)


def test_masking_a_dense_unit_equals_zeroing_its_weights(trained, mnist):
    """An independent check of the reference: dropping unit j of d1 is deleting its weights."""
    model = trained["dense"]
    chain = analyse_chain(model)
    mask = np.ones(chain.table.n_units, bool)
    dropped = [0, 3, 7]
    mask[dropped] = False
    zeroed = keras.models.clone_model(model)
    zeroed.set_weights(model.get_weights())
    kernel, bias = zeroed.get_layer("d1").get_weights()
    kernel[:, dropped] = 0.0
    bias[dropped] = 0.0
    zeroed.get_layer("d1").set_weights([kernel, bias])
    x = mnist.x_test[:16]
    got = ReferenceBackend(chain, rescale=False).probabilities(x, mask[None])[0]
    np.testing.assert_allclose(got, zeroed.predict(x, verbose=0), atol=1e-6)


def test_fast_backend_does_not_depend_on_example_batch(trained, mnist):
    chain = analyse_chain(trained["conv"])
    masks = sample_masks(chain.table.unit_keep(), seed=2, indices=range(5))
    a = FastBackend(chain, example_batch=96).probabilities(mnist.x_test, masks)
    b = FastBackend(chain, example_batch=7).probabilities(mnist.x_test, masks)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def _pooled_relu_model():
    """ReLU convolutions followed by max pooling (through a dropout, with odd sizes and 'same'
    padding), a PReLU before a global max pooling, a GELU and a LeakyReLU: the layers whose
    order the fast backend changes, or must not change, or slices."""
    inputs = keras.Input((13, 13, 2))
    x = keras.layers.Conv2D(5, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Conv2D(6, 2, activation="relu", name="c2")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Conv2D(7, 2, padding="same", name="c3")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    x = keras.layers.Dense(8, activation="gelu", name="d1")(x)
    x = keras.layers.LeakyReLU(0.1)(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs, name="pooled_relu")
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32")
                       for w in model.get_weights()])
    return model


def test_fast_backend_defers_bias_and_activation_past_max_pooling_bit_for_bit():
    chain = analyse_chain(_pooled_relu_model(), 0.5)
    backend = FastBackend(chain)
    deferred = {op.layer.name for segment in backend._segments for op in segment if op.deferred}
    # c2's bias and ReLU move past its dropout and pooling; c3's PReLU comes before its
    # pooling, and d1's GELU is not monotone, so they stay in place (c1 is in the prefix).
    assert deferred == {"c2"}
    masks = sample_masks(chain.table.unit_keep(), seed=4, indices=range(16))
    masks[0], masks[1] = True, False
    x = np.random.default_rng(5).random((30, 13, 13, 2), dtype=np.float32)
    fast = backend.probabilities(x, masks)
    np.testing.assert_allclose(fast, ReferenceBackend(chain).probabilities(x, masks), atol=1e-5)
    in_order = FastBackend(chain)
    for segment in in_order._segments:
        for op in segment:
            op.deferred = False
    assert np.array_equal(in_order.probabilities(x, masks), fast)


def test_fast_backend_traces_its_program_once_for_every_mask(trained, mnist):
    chain = analyse_chain(trained["conv"])
    backend = FastBackend(chain, example_batch=13)
    masks = sample_masks(chain.table.unit_keep(), seed=3, indices=range(20))
    masks[0], masks[1] = True, False
    assert len({tuple(mask.sum() for mask in chain.table.split(m).values()) for m in masks}) > 5
    backend.probabilities(mnist.x_test[:30], masks)
    assert backend._program.experimental_get_tracing_count() == 1


def test_fast_backend_keeps_the_prefix_for_the_same_examples(trained, mnist, monkeypatch):
    chain = analyse_chain(trained["conv"])
    backend = FastBackend(chain, example_batch=16)
    calls = []
    prefix = backend._prefix
    backend._prefix = lambda inputs, **kwargs: calls.append(1) or prefix(inputs, **kwargs)
    masks = sample_masks(chain.table.unit_keep(), seed=6, indices=range(6))
    x = mnist.x_test[:40].copy()
    first = backend.probabilities(x, masks[:3])
    assert len(calls) == 3  # 40 examples in batches of 16
    second = backend.probabilities(x, masks[3:])
    assert len(calls) == 3
    fresh = FastBackend(chain, example_batch=16)
    assert np.array_equal(np.concatenate([first, second]), fresh.probabilities(x, masks))
    x[7] = 0.0  # changed in place: new examples, whatever the array's identity
    changed = backend.probabilities(x, masks)
    assert len(calls) == 6
    assert np.array_equal(changed, fresh.probabilities(x, masks))
    assert not np.array_equal(changed[:, 7], first[:1, 7])
    monkeypatch.setattr(subnet.engine.fast, "PREFIX_CACHE_BYTES", 0)
    uncached = FastBackend(chain, example_batch=16)
    assert np.array_equal(uncached.probabilities(x, masks), changed)
    assert uncached._prefix_cache is None


# ---------------------------------------------------------------------------- record_masks

def _chunks(record):
    return [(c.start, c.stop, c.masks, c.predicted, c.true_prob) for c in record.iter_chunks()]


def _assert_same_outcomes(a, b):
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.predicted, b.predicted)
    np.testing.assert_array_equal(a.true_prob, b.true_prob)


def test_record_contents_match_the_reference(trained, mnist, tmp_path):
    model = trained["conv"]
    record = record_masks(model, mnist.x_test, mnist.y_test, 10, seed=4, out=tmp_path / "r",
                          backend="fast", chunk_size=4, progress=False)
    assert record.n_masks == 10 and record.n_examples == 96 and record.is_complete
    chain = analyse_chain(model)
    expected_masks = sample_masks(chain.table.unit_keep(), 4, range(10))
    np.testing.assert_array_equal(record.masks, expected_masks)
    prob = ReferenceBackend(chain).probabilities(mnist.x_test, expected_masks)
    np.testing.assert_array_equal(record.predicted, prob.argmax(-1))
    true = prob[:, np.arange(96), mnist.y_test].astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(record.true_prob, true, atol=1e-3)
    np.testing.assert_array_equal(record.correct, prob.argmax(-1) == mnist.y_test)
    np.testing.assert_allclose(record.mask_accuracy(), record.correct.mean(axis=1))
    np.testing.assert_allclose(record.example_accuracy(), record.correct.mean(axis=0))
    meta = record.meta
    assert meta["sites"][0]["name"] == "conv1" and meta["backend"] == "fast"
    assert len(meta["model_fingerprint"]) == 64 and len(meta["data_fingerprint"]) == 64
    assert {"subnet", "keras", "tensorflow", "numpy"} <= set(meta["versions"])


def test_record_is_deterministic_and_chunking_invariant(trained, mnist, tmp_path):
    model = trained["dense"]
    args = (model, mnist.x_test, mnist.y_test, 12)
    a = record_masks(*args, seed=7, out=tmp_path / "a", chunk_size=5, progress=False)
    b = record_masks(*args, seed=7, out=tmp_path / "b", chunk_size=5, progress=False)
    c = record_masks(*args, seed=7, out=tmp_path / "c", chunk_size=12, progress=False)
    d = record_masks(*args, seed=8, out=tmp_path / "d", chunk_size=12, progress=False)
    for x, y in zip(_chunks(a), _chunks(b), strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)
    _assert_same_outcomes(a, c)
    assert not np.array_equal(a.masks, d.masks)


def test_record_interrupted_then_resumed_equals_uninterrupted(trained, mnist, tmp_path,
                                                              monkeypatch):
    model = trained["conv"]
    args = (model, mnist.x_test, mnist.y_test, 20)
    full = record_masks(*args, seed=3, out=tmp_path / "full", chunk_size=4, progress=False)

    calls = {"n": 0}
    original = FastBackend.probabilities

    def crash_on_third_chunk(self, x, masks):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, x, masks)

    monkeypatch.setattr(FastBackend, "probabilities", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        record_masks(*args, seed=3, out=tmp_path / "cut", chunk_size=4, progress=False)
    monkeypatch.setattr(FastBackend, "probabilities", original)
    assert MaskRecord.load(tmp_path / "cut").n_masks == 8  # two chunks survived
    with pytest.raises(ValueError, match="resume=True"):
        record_masks(*args, seed=3, out=tmp_path / "cut", chunk_size=4, progress=False)
    resumed = record_masks(*args, seed=3, out=tmp_path / "cut", chunk_size=4, resume=True,
                           progress=False)
    _assert_same_outcomes(resumed, full)
    for name in ("chunk_0000000008_0000000012.npz", "chunk_0000000016_0000000020.npz"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_record_shards_merge_into_the_whole(trained, mnist, tmp_path):
    model = trained["dense_logits"]
    args = (model, mnist.x_test, mnist.y_test, 16)
    whole = record_masks(*args, seed=5, out=tmp_path / "whole", chunk_size=4, progress=False)
    first = record_masks(*args, seed=5, out=tmp_path / "s1", masks=range(0, 8), chunk_size=4,
                         progress=False)
    second = record_masks(*args, seed=5, out=tmp_path / "s2", masks=range(8, 16), chunk_size=4,
                          progress=False)
    assert not first.is_complete
    merged = MaskRecord.merge([first, second], tmp_path / "merged")
    assert merged.is_complete
    _assert_same_outcomes(merged, whole)


def test_resume_refuses_a_record_of_another_model(trained, mnist, tmp_path):
    args = (mnist.x_test, mnist.y_test, 8)
    record_masks(trained["dense"], *args, out=tmp_path / "r", progress=False)
    with pytest.raises(RecordError, match="model"):
        record_masks(trained["dense_logits"], *args, out=tmp_path / "r", resume=True,
                     progress=False)
    with pytest.raises(RecordError, match="seed"):
        record_masks(trained["dense"], *args, seed=9, out=tmp_path / "r", resume=True,
                     progress=False)


def test_record_with_the_reference_backend_and_antithetic_masks(trained, mnist, tmp_path):
    record = record_masks(trained["conv1d"], mnist.x_test[:20], mnist.y_test[:20], 6,
                          backend="reference", antithetic=True, out=tmp_path / "r",
                          progress=False)
    assert record.meta["backend"] == "reference"
    # At keep 0.5 (the dense site) the two masks of a pair are complements.
    dense = record.masks[:, 5:]
    np.testing.assert_array_equal(dense[0], ~dense[1])


@pytest.mark.parametrize("change, match", [
    ({"y": np.zeros(95, int)}, "one label per example"),
    ({"x": np.zeros((96, 28, 28), np.float32)}, r"expects examples of shape \(28, 28, 1\)"),
    ({"y": np.full(96, 10)}, r"integers in \[0, 10\)"),
    ({"x": np.zeros((96, 28, 28, 1), np.uint8)}, "floating point"),
    ({"n_masks": 0}, "n_masks"),
    ({"n_masks": 2.5}, "n_masks"),
    ({"rate": 1.0}, r"\[0, 1\)"),
    ({"backend": "gpu"}, "backend"),
    ({"masks": range(5, 50)}, "masks"),
])
def test_record_masks_bad_input(trained, mnist, tmp_path, change, match):
    kwargs = {"x": mnist.x_test, "y": mnist.y_test, "n_masks": 4, "out": tmp_path / "r",
              "progress": False}
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        record_masks(trained["dense"], **kwargs)


# ---------------------------------------------------------------------------- mc_dropout

def test_mc_dropout_matches_keras_dropout_statistics(trained, mnist):
    model = trained["dense"]
    result = subnet.mc_dropout(model, mnist.x_test, mnist.y_test, samples=6, seed=0)
    assert result.probabilities.shape == (6, 96, 10)
    deterministic = np.mean(model.predict(mnist.x_test, verbose=0).argmax(-1) == mnist.y_test)
    assert 0.3 < result.accuracy <= deterministic + 0.05
    assert len(set(result.pass_accuracy)) > 1
    assert result.summary()["samples"] == 6
    assert result.rates == {"p1": 0.5, "p2": 0.25}
    # Rate 0 everywhere: every pass is the deterministic model.
    quiet = subnet.mc_dropout(model, mnist.x_test, mnist.y_test, samples=2, rates=0.0)
    np.testing.assert_allclose(quiet.probabilities[0], model.predict(mnist.x_test, verbose=0),
                               atol=1e-6)
    assert np.all(quiet.probability_spread < 1e-6)
    assert quiet.ensemble_accuracy == pytest.approx(np.mean(
        model.predict(mnist.x_test, verbose=0).argmax(-1) == mnist.y_test))


def test_mc_dropout_bad_input(trained, mnist):
    with pytest.raises(ValueError, match="not Dropout layers"):
        subnet.mc_dropout(trained["dense"], mnist.x_test, mnist.y_test, rates={"d1": 0.5})
    with pytest.raises(ValueError, match="no Dropout layer"):
        subnet.mc_dropout(trained["conv_bn"], mnist.x_test, mnist.y_test)


def test_fixture_models_are_trained(trained, mnist):
    """The agreement tests above mean something only on trained networks (chance is 0.1)."""
    for name, model in trained.items():
        accuracy = np.mean(model.predict(mnist.x_test, verbose=0).argmax(-1) == mnist.y_test)
        assert accuracy > 0.45, name
