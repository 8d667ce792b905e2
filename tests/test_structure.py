"""Channel groups on every graph shape of the zoo: sites, masking, cost and extraction agree."""

import dataclasses
import json
import warnings

import numpy as np
import pytest

import subnet
from subnet.errors import InputError
from subnet.extraction import Budget, as_keep_set, extract, keep_sets, model_cost
from subnet.importance import estimate
from subnet.models import AlwaysOnDropout
from subnet.runtime import keras
from subnet.structure import Cost, channel_groups
from tests import zoo
from tests.helpers import tiny_dense_task

GRAPHS = ["merge_before_first_site", "text_conv1d", "resnet_identity", "resnet20_layout",
          "inception_block", "mobilenet_style", "squeeze_excite"]


@pytest.fixture(scope="module")
def built():
    """Each zoo graph, trained one quick epoch (so BatchNormalization is not the identity)."""
    models = {}
    for name in GRAPHS + ["chain_cnn"]:
        model = zoo.ZOO[name]()
        x, y = zoo.data_for(model, n=64)
        zoo.quick_train(model, x, y)
        models[name] = (model, x[:16], y[:16])
    return models


def _random_keep(s, seed):
    rng = np.random.default_rng(seed)
    bits = rng.random(s.n_units) < 0.6
    for site in s.sites:
        bits[site.groups[0]] = True
    return bits


@pytest.mark.parametrize("name", GRAPHS + ["chain_cnn"])
def test_extraction_equals_the_masked_model_and_the_cost_model(built, name):
    model, x, _ = built[name]
    s = channel_groups(model)
    bits = _random_keep(s, 1)
    keep = {site.name: bits[list(site.groups)] for site in s.sites}
    # extract() itself checks the smaller model against the masked one (atol 1e-5)...
    small, keep_set = extract(model, keep, check_x=x)
    # ...and here against the structure's masked model directly, and the unmasked model.
    masked = s.masked_model()
    values = np.repeat(bits[None].astype(np.float32), len(x), axis=0)
    np.testing.assert_allclose(small.predict(x, verbose=0),
                               masked.predict([x, values], verbose=0), atol=1e-5)
    np.testing.assert_allclose(masked.predict([x, np.ones_like(values)], verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)
    # The cost model's counts are the extracted model's own.
    assert model_cost(small)["flops"] == keep_set.flops == s.cost(bits)["flops"]
    assert small.count_params() == keep_set.params
    assert keep_set.flops < s.cost()["flops"]


def test_the_blog_networks_sites_and_cost_are_unchanged():
    model = subnet.seed_cnn(500, seed=0)
    s = channel_groups(model)
    assert [(site.name, site.kind, site.units, site.mask_layer) for site in s.sites] == [
        ("conv1", "conv2d", 20, "pool1"), ("conv2", "conv2d", 50, "pool2"),
        ("dense", "dense", 500, "drop3")]
    assert s.cost() == {"params": 431_080, "flops": 4_586_000}
    assert s.is_chain


def test_the_cost_is_a_frozen_cost_that_reads_as_the_dict_it_was():
    model, _ = tiny_dense_task()  # Dense 6 -> 8 ("hidden") -> 3
    s = channel_groups(model)
    whole = s.cost()
    assert isinstance(whole, Cost) and subnet.Cost is Cost
    # 6*8+8 + 8*3+3 parameters; 2 FLOPs per multiply-accumulate, biases not counted.
    assert (whole.params, whole.flops, whole.nonzero_params) == (83, 144, None)
    assert whole == {"params": 83, "flops": 144} and list(whole) == ["params", "flops"]
    assert len(whole) == 2 and "nonzero_params" not in whole and whole.get("flops") == 144
    with pytest.raises(KeyError):
        whole["nonzero_params"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        whole.flops = 0
    five = s.cost({"hidden": np.arange(8) < 5})  # 5 hidden units kept
    assert five == {"params": 6 * 5 + 5 + 5 * 3 + 3, "flops": 2 * (6 * 5 + 5 * 3)}
    assert five.to_dict() == {"params": 53, "flops": 90} and type(five.to_dict()) is dict
    assert Cost.from_dict(json.loads(json.dumps(five.to_dict()))) == five
    with pytest.raises(InputError, match=r"cost\['flops'\] is required but missing"):
        Cost.from_dict({"params": 53})


def test_a_residual_streams_channel_is_one_unit_across_every_block(built):
    model, x, _ = built["resnet_identity"]
    s = channel_groups(model)
    stream = s.sites[0]  # the stem's stream: the stem and every identity block write it
    assert stream.kind == "coupled" and len(stream.layers) >= 3
    writers = set(stream.layers)
    readers = {c.name for c in s.calls if isinstance(c.layer, keras.layers.Conv2D)
               and (s.input_channels(c.name) == stream.groups[0]).any()}
    assert len(readers) >= 3
    # Masking unit 0 of the stream changes the input of every layer that reads it...
    masked = s.masked_model()
    values = np.ones((len(x), s.n_units), np.float32)
    dropped = values.copy()
    dropped[:, stream.groups[0]] = 0.0
    assert np.abs(masked.predict([x, values], verbose=0) -
                  masked.predict([x, dropped], verbose=0)).max() > 1e-4
    # ...and extraction removes it from every producer, every per-channel layer between and
    # every consumer.
    bits = np.ones(s.n_units, bool)
    bits[stream.groups[0]] = False
    small = s.extract(bits)
    for name in writers:
        assert small.get_layer(name).filters == model.get_layer(name).filters - 1
    for name in readers:
        assert small.get_layer(name).kernel.shape[-2] == model.get_layer(name).kernel.shape[-2] - 1
    for call in s.calls:
        if isinstance(call.layer, keras.layers.BatchNormalization) and \
                (s.channels(call.name) == stream.groups[0]).any():
            assert small.get_layer(call.name).gamma.shape[0] == call.layer.gamma.shape[0] - 1


def test_concatenation_offsets_and_depthwise_multipliers_own_the_right_channels(built):
    s = channel_groups(built["inception_block"][0])
    concat = next(c for c in s.calls if isinstance(c.layer, keras.layers.Concatenate))
    assert len(concat.inputs) == 4
    expected = np.concatenate([s.channels(b) for b in concat.inputs])
    assert np.array_equal(s.channels(concat.name), expected)
    assert len(set(expected.tolist())) == len(expected)  # four branches, four sites' units
    m = channel_groups(built["mobilenet_style"][0])
    dw = next(c.layer for c in m.calls if isinstance(c.layer, keras.layers.DepthwiseConv2D)
              and c.layer.depth_multiplier == 2)
    assert np.array_equal(m.channels(dw.name), np.repeat(m.input_channels(dw.name), 2))


def test_records_and_every_backend_choice_on_a_graph(built, tmp_path):
    model, x, y = built["resnet_identity"]
    with warnings.catch_warnings():  # the graph backend is auto's choice here, not a fallback
        warnings.simplefilter("error", RuntimeWarning)
        record = subnet.record_masks(model, x, y, n_masks=8, rate=0.5, out=tmp_path / "r",
                                     progress=False)
    assert record.meta["backend"] == "graph"
    assert "branches, merges or coupled channels" in record.meta["backend_fallback"]
    reference = subnet.record_masks(model, x, y, n_masks=8, rate=0.5, out=tmp_path / "ref",
                                    backend="reference", progress=False)
    assert reference.meta["backend"] == "reference" and \
        reference.meta["backend_fallback"] is None
    np.testing.assert_array_equal(record.predicted, reference.predicted)
    np.testing.assert_allclose(record.true_prob, reference.true_prob, atol=1e-3)  # float16
    with pytest.raises(InputError, match="fast backend runs chains"):
        subnet.record_masks(model, x, y, n_masks=8, rate=0.5, backend="fast",
                            out=tmp_path / "f", progress=False)
    # A mask's probabilities are the masked model's.
    s = channel_groups(model)
    masks = np.asarray(record.masks, bool)
    table = subnet.sites(model, rate=0.5)
    values = masks.astype(np.float32) / table.unit_keep().astype(np.float32)
    probabilities = s.masked_model().predict(
        [x, np.repeat(values[:1], len(x), axis=0)], verbose=0)
    assert np.array_equal(np.asarray(record.predicted)[0], probabilities.argmax(-1))


@pytest.mark.parametrize("name", GRAPHS + ["chain_cnn", "mobilenetv2"])
def test_the_graph_backend_equals_the_masked_model_on_every_graph(built, name):
    """Each mask's sliced subnetwork gives the masked model's probabilities, also for masks
    that drop every unit of a site or of every site (sliced with a zero-factor channel in each
    such site, not handed to the masked model)."""
    from subnet.engine.chain import analyse_chain
    from subnet.engine.graph import GraphBackend
    from subnet.engine.reference import ReferenceBackend

    if name == "mobilenetv2":
        model = zoo.mobilenetv2()
        x, _ = zoo.data_for(model, n=8)
        zoo.calibrate_batch_norm(model, x)
    else:
        model, x, _ = built[name]
    chain = analyse_chain(model, 0.5)
    masks = subnet.sample_masks(chain.table.unit_keep(), 0, range(12))
    masks[0] = True
    site = chain.structure.sites[-1]
    masks[1, list(site.groups)] = False  # a whole site dropped
    masks[2] = False  # every site dropped
    # Without rescaling, to float32 rounding (the graph backend folds BatchNormalization into
    # the convolution before it, which rounds differently: up to 5e-5 over MobileNetV2's ~50
    # layers). With it, x2 at every unit compounds through the depth of the untrained
    # MobileNetV2 into a function so ill-conditioned that no float32 comparison means
    # anything there (weights perturbed by 1e-7 of their value move the reference backend's
    # own probabilities by 0.36), so it is compared without; shallower graphs stay within 1e-3.
    deep = name == "mobilenetv2"
    for rescale, atol in ((False, 1e-4 if deep else 5e-5),) + (() if deep else ((True, 1e-3),)):
        graph = GraphBackend(chain, rescale=rescale, batch_size=5)  # several batches
        reference = ReferenceBackend(chain, rescale=rescale)
        assert graph._plans(masks)[2].all()  # every mask sliced, emptied sites included
        sliced = graph.probabilities(x, masks)
        np.testing.assert_allclose(sliced, reference.probabilities(x, masks), atol=atol)
        assert graph._reference is None  # no mask needed the masked model
        # A mask's probabilities do not depend on the masks it shares a call with: records
        # shard and resume bit-identically.
        assert np.array_equal(graph.probabilities(x, masks[5:8]), sliced[5:8])
        assert np.array_equal(graph.probabilities(x, masks[[9, 2]]), sliced[[9, 2]])


@pytest.mark.parametrize("name", ["resnet20_layout", "inception_block", "text_conv1d"])
def test_the_compiled_reference_backend_equals_keras_and_does_not_depend_on_its_block(built,
                                                                                      name):
    """XLA over fixed-size blocks of (mask, example) rows: the same probabilities as Keras's own
    call, and bit for bit the same for a mask whatever block it lands in (records resume and
    shard bit-identically)."""
    from subnet.engine.chain import analyse_chain
    from subnet.engine.reference import ReferenceBackend

    model, x, _ = built[name]
    chain = analyse_chain(model, 0.5)
    masks = subnet.sample_masks(chain.table.unit_keep(), 0, range(12))
    compiled = ReferenceBackend(chain, batch_size=40, jit=True)  # 16 examples: blocks straddle
    plain = ReferenceBackend(chain, batch_size=40)
    every = compiled.probabilities(x, masks)
    np.testing.assert_allclose(every, plain.probabilities(x, masks), atol=1e-5)
    assert np.array_equal(compiled.probabilities(x, masks[5:8]), every[5:8])
    assert np.array_equal(compiled.probabilities(x[:7], masks[:1]), every[:1, :7])


def test_a_chain_keeps_the_fast_backend(built):
    model, x, y = built["chain_cnn"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        record = subnet.record_masks(model, x, y, n_masks=4, rate=0.5, progress=False)
    assert record.meta["backend"] == "fast" and record.meta["backend_fallback"] is None


@pytest.mark.parametrize("allocation", ["cost", "joint", "uniform", "global"])
def test_budgets_on_a_graph_are_met_exactly(built, allocation):
    model, x, y = built["resnet20_layout"]
    importance = estimate((model, x, y), "magnitude", rate=0.5)
    dense = channel_groups(model).cost()["flops"]
    keep = keep_sets(importance, Budget.flops(0.4), model, allocation=allocation)
    assert keep.flops <= 0.4 * dense
    assert keep.flops == as_keep_set(model, dict(keep)).flops
    assert min(keep.widths.values()) >= 1


def test_a_merge_before_the_first_site_is_part_of_the_prefix(built):
    s = channel_groups(built["merge_before_first_site"][0])
    assert [site.name for site in s.sites] == ["conv1", "conv2", "dense1"]
    assert (s.channels("merge") < 0).all()  # fixed: the input's own channels
    # the fast backend's segments are read from the structure: the merge is in its prefix
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.engine.reference import ReferenceBackend

    model, x, _ = built["merge_before_first_site"]
    chain = analyse_chain(model, 0.5)
    masks = subnet.sample_masks(chain.table.unit_keep(), 0, range(5))
    fast = make_backend(chain)
    assert fast.name == "fast"
    np.testing.assert_allclose(fast.probabilities(x[:16], masks),
                               ReferenceBackend(chain).probabilities(x[:16], masks), atol=1e-5)


def test_layers_that_cannot_be_masked_are_named_with_the_reason():
    with pytest.raises(InputError, match=r"'features' is a nested model.*flatten_nested"):
        channel_groups(zoo.nested_model())
    with pytest.raises(InputError, match=r"'ln' \(LayerNormalization\) normalises across "
                                         "channels"):
        channel_groups(zoo.layer_norm_model())
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6, name="hidden")(inputs)
    lam = keras.layers.Lambda(lambda t: t * 2.0, name="double")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(lam))
    with pytest.raises(InputError, match=r"'double' \(Lambda\) runs code"):
        channel_groups(model)
    # Before the first unit any layer may stand: a Lambda on the input is fine.
    inputs = keras.Input((8,))
    scaled = keras.layers.Lambda(lambda t: t / 2.0, name="halve")(inputs)
    hidden = keras.layers.Dense(6, name="hidden")(scaled)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    assert [site.name for site in channel_groups(model).sites] == ["hidden"]


def test_mobilenetv2_masks_costs_and_extracts_exactly():
    model = zoo.mobilenetv2()
    x, _ = zoo.data_for(model, n=4)
    s = channel_groups(model)
    assert len(s.sites) > 10 and any(site.kind == "coupled" for site in s.sites)
    bits = _random_keep(s, 2)
    small = s.extract(bits)
    values = np.repeat(bits[None].astype(np.float32), len(x), axis=0)
    np.testing.assert_allclose(small.predict(x, verbose=0),
                               s.masked_model().predict([x, values], verbose=0), atol=1e-5)
    assert channel_groups(small).cost() == s.cost(bits)
    assert small.count_params() == s.cost(bits)["params"]


@pytest.mark.parametrize("name", GRAPHS)
def test_every_criterion_scores_every_unit_of_a_graph(built, name):
    model, x, y = built[name]
    n_units = channel_groups(model).n_units
    for method in ("magnitude", "activation", "apoz", "taylor", "random"):
        importance = estimate((model, x, y), method, rate=0.5)
        assert importance.scores.shape == (n_units,)
        assert np.isfinite(importance.scores).all()


def test_magnitude_of_a_coupled_unit_sums_every_kernel_that_writes_it(built):
    model, x, y = built["resnet_identity"]
    s = channel_groups(model)
    stream = s.sites[0]
    unit = stream.groups[3]
    expected = sum(np.abs(model.get_layer(layer).kernel.numpy()[..., channels]).sum()
                   for layer, channels in s.groups[unit].producers.items())
    scores = estimate((model, x, y), "magnitude", rate=0.5).scores
    assert scores[unit] == pytest.approx(expected, rel=1e-6)
    assert len(s.groups[unit].producers) == len(stream.layers) >= 3


def test_taylor_on_a_graph_is_the_loss_gradient_at_the_units_multiplier(built):
    model, x, y = built["inception_block"]
    s = channel_groups(model)
    masked = s.masked_model()
    x1, y1 = x[:1], y[:1]
    score = estimate((model, x1, y1), "taylor", rate=0.5)
    unit, eps = s.sites[1].groups[0], 1e-2

    def loss(value):
        values = np.ones((1, s.n_units), np.float32)
        values[0, unit] = value
        p = masked.predict([x1, values], verbose=0)[0, y1[0]]
        return -np.log(float(p))

    gradient = (loss(1 + eps) - loss(1 - eps)) / (2 * eps)
    entries = score.details["positions"][s.sites[1].name]
    assert score.scores[unit] == pytest.approx(abs(gradient) / entries, rel=2e-2)


def test_tfmot_prunes_a_residual_graph_in_its_child(built):
    from subnet.baselines.tfmot import kernel_sparsity, magnitude_prune, tfmot_available
    from subnet.data import Dataset

    if not tfmot_available():
        pytest.fail("tensorflow-model-optimization is not installed")
    model, x, y = built["resnet_identity"]
    data = Dataset(name="zoo", x_train=x, y_train=y, x_test=x, y_test=y, num_classes=10)
    pruned, info = magnitude_prune(model, data, sparsity=0.5, examples=32, seed=0)
    assert info["kernel_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert [w.shape for w in pruned.get_weights()] == [w.shape for w in model.get_weights()]
    kernels = [layer.kernel.numpy() for layer in pruned.layers
               if isinstance(layer, keras.layers.Conv2D)]
    assert np.mean([np.mean(k == 0) for k in kernels]) > 0.4
    assert 0 < kernel_sparsity(model, model.count_params() - 100) < 0.1


@pytest.mark.parametrize("name, methods", [("resnet_identity", "banzhaf_iterative,taylor"),
                                           ("mobilenet_style", "magnitude")])
def test_the_analysis_runs_end_to_end_on_a_graph(built, name, methods, tmp_path):
    """Every criterion runs on every graph in the tests above; here the command line takes two
    graphs through every stage (each subnetwork costs Keras a trace of its train step, the
    most of this test's time, so each graph gets a share of the criteria)."""
    import json

    from subnet.analyze import main

    model, _, _ = built[name]
    rng = np.random.default_rng(0)
    x = rng.random((96, 28, 28, 1), dtype=np.float32)
    y = (x[:, 10:18, 10:18, 0].mean(axis=(1, 2)) > 0.5).astype(np.int64) * 3
    np.savez(tmp_path / "data.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:],
             y_test=y[64:])
    model.save(tmp_path / "model.keras")
    code = main([str(tmp_path / "model.keras"), "--dataset", str(tmp_path / "data.npz"),
                 "--rate", "0.5", "--masks", "24", "--examples", "32", "--budgets", "0.5",
                 "--methods", methods, "--finetune-epochs", "0.1",
                 "--passes", "2", "--formats", "json", "--quiet",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [s["name"] for s in results["model"]["sites"]] == \
        [s.name for s in channel_groups(model).sites]
    assert {row["method"] for row in results["comparison"]["rows"]} == set(methods.split(","))
    # the results name the engine that evaluated the masks, and why it is not the fast one
    assert results["importance"]["record_backend"] == "graph"
    assert "not one" in results["importance"]["record_backend_fallback"]


@pytest.mark.parametrize("builder, message", [
    (zoo.layer_norm_model, "'ln' (LayerNormalization) normalises across channels"),
])
def test_the_command_line_names_a_layer_it_cannot_mask_and_writes_nothing(
        builder, message, tmp_path, capsys):
    from subnet.analyze import main

    model = builder()
    x, y = zoo.data_for(model, n=16)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    model.save(tmp_path / "model.keras")
    code = main([str(tmp_path / "model.keras"), "--dataset", str(tmp_path / "data.npz"),
                 "--rate", "0.5", "--quick", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def _ops_model(input_shape=(10, 10, 3)):
    """Keras operations where layers usually stand: a hard swish written as
    ``x * relu6(x + 3) / 6`` and a squeeze-and-excite block's ``x * hard_sigmoid(s)`` (how
    MobileNetV3 and hand-written models use them)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = x * keras.ops.relu6(x + 3.0) / 6.0
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = keras.layers.Conv2D(4, 1, activation="relu", name="squeeze")(s)
    s = keras.layers.Conv2D(8, 1, name="excite")(s)
    x = x * keras.ops.hard_sigmoid(s)
    x = keras.layers.Conv2D(6, 3, name="c2")(keras.ops.maximum(x, -1.0))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="out")(x))
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(0.0, 0.4, w.shape).astype("float32") if "variance" not in
                       v.path else np.ones(w.shape, "float32")
                       for w, v in zip(model.get_weights(), model.weights, strict=True)])
    return model


def test_keras_operations_pass_channels_through_mask_slice_and_extract():
    from subnet.engine.chain import analyse_chain
    from subnet.engine.graph import GraphBackend
    from subnet.engine.reference import ReferenceBackend

    model = _ops_model()
    x = np.random.default_rng(8).random((6, 10, 10, 3), dtype=np.float32)
    s = channel_groups(model)
    # c1's channels flow through the operations and the depthwise convolution into the
    # multiplication by the excitation, which couples them with excite's outputs: one site.
    assert [(site.name, site.kind, len(site.groups)) for site in s.sites] == [
        ("c1", "coupled", 8), ("squeeze", "conv2d", 4), ("c2", "conv2d", 6)]
    chain = analyse_chain(model, 0.5)
    masks = subnet.sample_masks(chain.table.unit_keep(), 0, range(10))
    masks[0] = True
    np.testing.assert_allclose(GraphBackend(chain, rescale=False).probabilities(x, masks),
                               ReferenceBackend(chain, rescale=False).probabilities(x, masks),
                               atol=1e-5)
    bits = _random_keep(s, 2)
    keep = {site.name: bits[list(site.groups)] for site in s.sites}
    small, keep_set = extract(model, keep, check_x=x)  # checked against the masked model
    assert keep_set.flops < s.cost()["flops"] and model_cost(small)["flops"] == keep_set.flops


def test_keras_operations_subnet_cannot_see_through_are_named():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6, name="hidden")(inputs)
    for op, what in ((lambda t: keras.ops.cumsum(t, axis=-1), "cumsum"),
                     (lambda t: t * np.arange(6, dtype="float32"), "multiply")):
        outputs = keras.layers.Dense(3, activation="softmax")(op(hidden))
        with pytest.raises(InputError, match=rf"'{what}[_0-9]*' \(\w+\) is a Keras operation "
                                             r"on tensors.*x \+ 3\.0.*x \* y"):
            channel_groups(keras.Model(inputs, outputs))


def test_the_analysis_runs_end_to_end_on_keras_operations(tmp_path):
    """Saved, loaded without trust, recorded, ranked, extracted, fine-tuned and reported."""
    import json

    from subnet.analyze import main

    rng = np.random.default_rng(1)
    x = rng.random((96, 28, 28, 1), dtype=np.float32)
    y = (x[:, 10:18, 10:18, 0].mean(axis=(1, 2)) > 0.5).astype(np.int64) * 3
    np.savez(tmp_path / "data.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:],
             y_test=y[64:])
    _ops_model((28, 28, 1)).save(tmp_path / "model.keras")
    code = main([str(tmp_path / "model.keras"), "--dataset", str(tmp_path / "data.npz"),
                 "--rate", "0.5", "--masks", "24", "--examples", "32", "--budgets", "0.5",
                 "--methods", "magnitude,banzhaf", "--finetune-epochs", "0.1", "--passes", "2",
                 "--formats", "json", "--quiet", "--out", str(tmp_path / "out")])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [site["name"] for site in results["model"]["sites"]] == ["c1", "squeeze", "c2"]
    assert {row["method"] for row in results["comparison"]["rows"]} == {"magnitude",
                                                                          "banzhaf_iterative"}
    assert results["importance"]["record_backend"] == "graph"


class _Swish(keras.layers.Layer):
    """A per-channel layer subnet's table does not know (zero stays zero)."""

    def call(self, x):
        return x * keras.ops.sigmoid(x)


def test_a_layer_type_is_taught_by_one_rule_in_the_table(monkeypatch):
    """An unknown layer is refused by name; one rule in the table makes it masked, costed,
    extracted and run by every backend like the layers subnet knows."""
    from subnet.engine.chain import analyse_chain
    from subnet.engine.graph import GraphBackend
    from subnet.engine.reference import ReferenceBackend
    from subnet.structure import rules

    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(6, 3, name="c1")(inputs)
    x = _Swish(name="swish")(x)
    x = keras.layers.Conv2D(5, 3, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))
    with pytest.raises(InputError, match=r"'swish' \(_Swish\) is not a layer subnet knows"):
        channel_groups(model)
    monkeypatch.setattr(rules, "TABLE", (((_Swish,), rules.Rule()),) + rules.TABLE)
    s = channel_groups(model)
    assert [(site.name, len(site.groups)) for site in s.sites] == [("c1", 6), ("c2", 5)]
    x = np.random.default_rng(3).random((5, 8, 8, 2), dtype=np.float32)
    bits = _random_keep(s, 4)
    small, keep_set = extract(model, {site.name: bits[list(site.groups)] for site in s.sites},
                              check_x=x)  # checked against the masked model
    assert model_cost(small)["flops"] == keep_set.flops == s.cost(bits)["flops"]
    chain = analyse_chain(model, 0.5)
    masks = subnet.sample_masks(chain.table.unit_keep(), 0, range(6))
    np.testing.assert_allclose(GraphBackend(chain, rescale=False).probabilities(x, masks),
                               ReferenceBackend(chain, rescale=False).probabilities(x, masks),
                               atol=1e-5)


@pytest.mark.parametrize("layer, name, produces, noise", [
    (keras.layers.Dense(3), "dense", True, False),
    (keras.layers.Conv2D(3, 3), "conv", True, False),
    (keras.layers.SeparableConv2D(3, 3), "separable", True, False),
    (keras.layers.DepthwiseConv2D(3), "depthwise", False, False),
    (keras.layers.Dropout(0.5), "dropout", False, True),
    (keras.layers.GaussianNoise(0.1), "noise", False, True),
    (keras.layers.BatchNormalization(), "batch_norm", False, False),
    (keras.layers.PReLU(), "prelu", False, False),
    (keras.layers.Add(), "merge", False, False),
    (keras.layers.Concatenate(), "concatenate", False, False),
    (keras.layers.Flatten(), "flatten", False, False),
    (keras.layers.ReLU(), "pass", False, False),
    (AlwaysOnDropout(0.5), "pass", False, False),  # on at inference: not noise
])
def test_the_table_gives_each_layer_kind_its_rule(layer, name, produces, noise):
    from subnet.structure import rule_for

    rule = rule_for(layer)
    assert (rule.name, rule.produces, rule.noise) == (name, produces, noise)
