"""The checks of the inputs against each other before any work (model, data set, a given
record), and the loading of the data sets an analysis reads."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from subnet.analyze.settings import DATASETS, LIMITS, OOD_AUTO, TEST_EXAMPLES, Settings
from subnet.errors import InputError, RecordError, clean
from subnet.record import MaskRecord, data_fingerprint, model_fingerprint


def _given_record(path, settings: Settings):
    """The ``--record`` folder, checked to be a complete record of the settings' seed."""
    try:
        source = MaskRecord.load(path)
    except RecordError as err:
        reason = _file_terms(str(err)).rstrip(".")
        raise RecordError(f"--record {clean(str(path))}: {reason}. Give a folder that python -m "
                          "subnet.record wrote, or leave --record out to record here.") from None
    for what, n, low in (("masks", source.n_masks, 20), ("examples", source.n_examples, 10)):
        if not low <= n <= LIMITS[what]:
            raise RecordError(f"--record {clean(str(path))} holds {n:,} {what}; subnet.analyze "
                              f"needs {low} to {LIMITS[what]:,}. Record again with python -m "
                              f"subnet.record ... --{what} N (N in that range).")
    if not source.is_complete:
        raise RecordError(f"--record {clean(str(path))}: the record is incomplete; finish it "
                          "(python -m subnet.record ... --resume) or merge all its shards "
                          "first.")
    seed = int(source.meta["seed"])
    if seed != settings.seed:
        raise RecordError(f"--record {clean(str(path))} was made with seed {seed}; pass "
                          f"--seed {seed}.")
    return source


def _file_terms(message: str) -> str:
    """A record reader's message with the metadata keys written as in ``meta.json``
    (``n_masks``, ``sites[0].units``), not as the Python expression ``meta['n_masks']``."""

    def key_path(match: re.Match) -> str:
        parts = re.findall(r"\['([^']*)'\]|\[(\d+)\]", match.group(1))
        text = "".join(f".{name}" if name else f"[{index}]" for name, index in parts)
        return text.lstrip(".")

    return re.sub(r"`?meta((?:\['[^']*'\]|\[\d+\])+)`?", key_path, message)


def _check_outputs(model, model_path, data, settings: Settings) -> None:
    """Refuses a model whose outputs are not finite on the examples the analysis uses (NaN or
    infinite weights, or weights so large that they overflow), before any work."""
    from subnet.runtime import keras

    n = min(settings.examples, len(data.x_test))
    bad = 0
    for start in range(0, n, 1000):  # eager calls: no tf.function traced for one look
        out = keras.ops.convert_to_numpy(model(data.x_test[start:min(n, start + 1000)],
                                               training=False))
        bad += int(np.sum(~np.isfinite(out).all(axis=-1)))
    if bad:
        raise InputError(f"The model in {clean(str(model_path))!r} gives NaN or infinite outputs "
                         f"on {bad:,} of the first {n:,} test examples of {data.name}: its "
                         "weights hold NaN or infinite values, or values so large that they "
                         "overflow float32 (a diverged training run gives such weights). Train "
                         "it again, or save the model from a checkpoint before it diverged.")


def _check_given_record(source, model, data, settings: Settings) -> None:
    """The ``--record`` must be of this model (dropout off) and these test examples."""
    from subnet.models import with_dropout

    if source.meta["model_fingerprint"] != model_fingerprint(with_dropout(model, on=False)):
        raise RecordError(f"--record {source.path} was made from other weights than this "
                          "model's; give the record of this model file, or leave --record out "
                          "to record here.")
    n = source.n_examples
    if n > len(data.x_test) or source.meta["data_fingerprint"] != data_fingerprint(
            data.x_test[:n], data.y_test[:n]):
        raise RecordError(f"--record {source.path} was made on other examples than the first "
                          f"{n} test examples of {data.name}; give the --dataset (and "
                          "--data-dir) it was recorded on, or leave --record out to record "
                          "here.")


def _dataset(model, settings: Settings, data_dir, log, max_data_bytes: int | None = None):
    """Loads the dataset, inferring it from the model when not given; checks that it fits.

    Of the test split, the first max(``settings.examples``, :data:`TEST_EXAMPLES`) examples are
    read, however many the file holds."""
    from subnet.data import load_dataset

    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    limits = {"n_test": max(settings.examples, TEST_EXAMPLES), "max_bytes": max_data_bytes}
    if settings.dataset is not None:
        # A 3-D array in a .npz without a `layout` key is (N, L, C) sequences for a model that
        # takes (L, C), else (N, H, W) grayscale images.
        data = load_dataset(settings.dataset, data_dir=data_dir,
                            layout_3d="sequences" if len(shape) == 2 else "images", **limits)
        _check_fits(model, data, settings.dataset)
        return data, data.name
    candidates, failures = [], []
    for name in DATASETS:
        try:
            data = load_dataset(name, data_dir=data_dir, **limits)
        except InputError as err:
            failures.append(err)
            continue
        if tuple(data.input_shape) == shape:
            candidates.append(data)
    if not candidates and data_dir is not None and len(failures) == len(DATASETS):
        raise failures[-1]  # the folder the user named holds neither: say why
    if not candidates:
        raise InputError(f"No known dataset fits the model's input shape {shape} (known: "
                         f"{', '.join(DATASETS)}, 28x28x1); give --dataset PATH.npz.")
    if len(candidates) == 1:
        return candidates[0], candidates[0].name
    # Several datasets share the shape: the one the model classifies well is the one it was
    # trained on. Decided on 500 test examples; anything unclear asks the user.
    scores = {}
    for data in candidates:
        _check_fits(model, data, data.name)
        from subnet.extraction import accuracy

        scores[data.name] = accuracy(model, data.x_test[:500], data.y_test[:500])
    ranked = sorted(scores, key=scores.get, reverse=True)
    best, second = ranked[0], ranked[1]
    if scores[best] < 0.5 or scores[best] - scores[second] < 0.2:
        raise InputError(f"Cannot tell which dataset the model was trained on (accuracy on 500 "
                         f"test examples: {', '.join(f'{k} {v:.1%}' for k, v in scores.items())})"
                         f"; give --dataset.")
    log(f"dataset inferred: {best} (accuracy on 500 test examples: " + ", ".join(
        f"{k} {v:.1%}" for k, v in scores.items()) + ")")
    return next(d for d in candidates if d.name == best), best


def _check_budgets(model, rate: dict, budgets: Sequence[float]) -> None:
    """Refuses FLOP budgets below what one unit per site costs, before any work."""
    from subnet.engine.chain import sites
    from subnet.extraction import as_keep_set

    table = sites(model, rate)
    smallest = as_keep_set(model, {s.name: np.arange(s.units) == 0 for s in table})
    floor = smallest.flops / smallest.dense_flops
    low = [b for b in budgets if b < floor]
    if low:
        raise InputError(f"Invalid value for --budgets: {', '.join(f'{b:g}' for b in low)} "
                         f"{'is' if len(low) == 1 else 'are'} below {floor:.3g}, the FLOP "
                         "fraction of a subnetwork that keeps one unit per site; give budgets "
                         f"in [{floor:.3g}, 1).")


def _check_methods(model, methods: Sequence[str]) -> None:
    """Refuses, before any work, methods that cannot handle this model."""
    from subnet.runtime import keras

    code = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Lambda)]
    if "tfmot" in methods and code:
        raise InputError(f"Method tfmot rebuilds the model in tf_keras, which cannot carry the "
                         f"code of Lambda layer {code[0]!r}; leave tfmot out of --methods.")


def _fit_to_data(settings: Settings, data, log) -> Settings:
    """Settings as they will run on ``data``: checked against it, with what had to be changed
    said in the log and stored in the settings (so results.json tells what ran)."""
    from subnet.baselines import tfmot_available

    changes = {}
    fewest = 10  # the fewest test examples the masks may be evaluated on (Settings.examples)
    if len(data.x_test) < fewest:
        raise InputError(f"Dataset {data.name!r} ({clean(data.source, limit=300)}) has "
                         f"{len(data.x_test)} test example{'s' * (len(data.x_test) != 1)}; "
                         f"subnet.analyze evaluates its masks on at least {fewest}. Give a data "
                         f"set with {fewest} or more test examples (x_test, y_test).")
    if settings.examples > len(data.x_test):
        log(f"{data.name} has {len(data.x_test):,} test examples, fewer than the "
            f"{settings.examples:,} to evaluate masks on (--examples): using "
            f"{len(data.x_test):,}")
        changes["examples"] = len(data.x_test)
    if data.x_train is None:
        log(f"{data.name} has no training split: the comparison (which fine-tunes and chooses "
            "units on training examples) is skipped")
    else:
        n_train = len(data.x_train)
        if n_train <= settings.selection_examples:
            chosen = n_train // 5
            if chosen < 10:
                raise InputError(f"Dataset {data.name!r} ({clean(data.source, limit=300)}) has "
                                 f"{n_train} training examples; the comparison needs at least "
                                 "50 (it chooses units on a held-out fifth of them). Give a "
                                 "larger training split (x_train, y_train), or a test-only "
                                 "data set to skip the comparison.")
            log(f"{data.name} has {n_train:,} training examples: units are chosen on the last "
                f"{chosen:,} (a fifth) instead of {settings.selection_examples:,}")
            changes["selection_examples"] = chosen
        if "tfmot" in settings.methods and not tfmot_available():
            raise InputError("Method tfmot needs tensorflow-model-optimization and tf-keras: "
                             "pip install 'subnet[tfmot]', or leave tfmot out of --methods.")
    return dataclasses.replace(settings, **changes) if changes else settings


def _check_fits(model, data, name) -> None:
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if tuple(data.input_shape) != shape:
        raise InputError(f"The model takes inputs of shape {shape}, but dataset {name!r} has "
                         f"{data.layout} of shape {tuple(data.input_shape)}; choose the dataset "
                         "the model was trained on with --dataset.")
    classes = int(model.outputs[0].shape[-1])
    if classes < data.num_classes:
        raise InputError(f"The model has {classes} outputs, but dataset {name!r} has "
                         f"{data.num_classes} classes; choose the dataset the model was trained "
                         "on with --dataset.")
    if data.layout == "tokens":
        _check_token_ids(model, data, name)


def _check_token_ids(model, data, name) -> None:
    """Token ids go into an Embedding layer, and each must have a row in it."""
    from subnet.runtime import keras

    embeddings = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    if not embeddings:
        raise InputError(f"Dataset {name!r} holds integer token ids (a 2-D integer x, or "
                         "layout='tokens'), but the model has no Embedding layer to look them "
                         "up; if x holds measurements or pixel values, store them as floats "
                         "(layout='features', pixels scaled to [0, 1]).")
    rows = int(embeddings[0].input_dim)
    largest = max(int(x.max()) for x in (data.x_train, data.x_test) if x is not None)
    if largest >= rows:
        raise InputError(f"Dataset {name!r} has token id {largest}, but the model's Embedding "
                         f"layer {embeddings[0].name!r} has {rows} rows (ids 0..{rows - 1}); "
                         "encode the text with the vocabulary the model was trained with.")


def _ood_dataset(data, settings: Settings, max_data_bytes: int | None = None):
    """The out-of-distribution test set of the uncertainty section (None for none), checked
    against the analysed data's example shape before any stage runs; only its first
    ``settings.examples`` test examples are read."""
    from subnet.data import load_dataset

    name = settings.ood
    if name == "none" or (name == "auto" and data.name not in OOD_AUTO):
        return None
    name = OOD_AUTO[data.name] if name == "auto" else name
    # --data-dir holds the analysed data set's files, not this one's.
    ood = load_dataset(name, n_test=settings.examples, max_bytes=max_data_bytes)
    if tuple(ood.x_test.shape[1:]) != tuple(data.x_test.shape[1:]):
        raise InputError(f"--ood {clean(name)}: its examples have shape "
                         f"{tuple(ood.x_test.shape[1:])}, the model's input "
                         f"{tuple(data.x_test.shape[1:])}; give a data set of the same shape, "
                         "or --ood none.")
    return ood.subset(n_test=min(settings.examples, len(ood.x_test)))
