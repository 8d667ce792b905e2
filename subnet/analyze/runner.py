"""The stage runner of :func:`analyze`: input checks, the time-budget plan, the stages in order
(each stored under ``DIR/state`` and reused by ``--resume``), their timings, results.json and the
reports."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import subnet
from subnet._io import atomic_write_text
from subnet._outdir import claim
from subnet.analyze.answer import _answer, _chance_sentence, _save_subnetwork
from subnet.analyze.inputs import (
    _check_budgets,
    _check_given_record,
    _check_methods,
    _check_outputs,
    _dataset,
    _fit_to_data,
    _given_record,
    _ood_dataset,
)
from subnet.analyze.settings import (
    _FINAL_OUTPUTS,
    FORMATS,
    OUTPUTS,
    SIZED,
    Settings,
    _check_formats,
    _check_max_data_bytes,
    _check_paths,
)
from subnet.analyze.stages import (
    _blog,
    _comparison,
    _importance,
    _keep,
    _keep_section,
    _record,
    _subnetwork_files,
    _uncertainty,
)
from subnet.errors import InputError, InputTypeError, clean
from subnet.keep import KeepProbabilities
from subnet.results import SCHEMA_VERSION


def analyze(model_path: str | Path, out: str | Path, settings: Settings | None = None, *,
            formats: Sequence[str] = FORMATS, resume: bool = False, trust_model: bool = False,
            data_dir: str | Path | None = None, progress: bool = True,
            command: Sequence[str] | None = None, record: str | Path | None = None,
            executor=None, max_data_bytes: int | None = None) -> dict:
    """Runs the whole analysis of one model file and writes results and reports.

    Args:
        model_path: A ``.keras`` or ``.h5`` classifier.
        out: Output folder (created).
        settings: A :class:`Settings` (default: the defaults).
        formats: Any of ``html``, ``pdf``, ``json`` (``results.json`` is always written).
        resume: Reuse the stages a previous run with the same settings, model and data finished.
        trust_model: Allow Lambda layers (code inside the model file) to run.
        data_dir: Folder with the dataset's IDX files, tried first.
        progress: Progress bars and stage lines on stderr.
        command: The command line, recorded in the results.
        record: A complete record of this model (dropout off) on the first test examples, made
            by ``python -m subnet.record`` (one process, or merged shards), used instead of
            recording: its masks and examples replace ``settings.masks`` and
            ``settings.examples``; its seed must be ``settings.seed``. It is copied into ``out``.
        executor: Where the record's chunks and the comparison's cells run
            (:mod:`subnet.distributed`): None here; a :class:`~subnet.distributed.RayExecutor`
            as Ray tasks. The results are the same.
        max_data_bytes: The most bytes the data set's arrays may declare, decompressed (None:
            :data:`subnet.data.MAX_BYTES`). Of its test split, only the first
            max(``settings.examples``, :data:`TEST_EXAMPLES`) examples are read.

    Returns:
        The results dict (as written to ``results.json``).

    Raises:
        ValueError: Bad input: missing or corrupt model, untrusted code, no maskable layer, a
            dataset that does not fit the model, bad settings.
    """
    settings = settings or Settings()
    if not isinstance(settings, Settings):
        raise InputTypeError(f"`settings` must be a subnet.analyze.Settings. Received: "
                             f"{type(settings).__name__}")
    formats = _check_formats(formats)
    model_path = Path(model_path)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {clean(str(out))!r} exists and is not a folder; choose a "
                         "folder.")
    log = _Log(progress)
    started = time.perf_counter()
    # Everything that can be wrong with the input is found before any work or any write, and
    # what needs no model before TensorFlow is imported (an error comes in a second).
    _check_paths(model_path, settings, data_dir=data_dir, record=record)
    max_data_bytes = _check_max_data_bytes(max_data_bytes)
    source = None
    if record is not None:
        source = _given_record(record, settings)
        settings = dataclasses.replace(settings, masks=source.n_masks,
                                       examples=source.n_examples)
    from subnet.models import load_model

    model = load_model(model_path, trust=trust_model)
    _check_budgets(model, 0.5, settings.budgets)  # model problems first, before loading data
    _check_methods(model, settings.methods)
    data, inferred = _dataset(model, settings, data_dir, log, max_data_bytes)
    settings = dataclasses.replace(settings, dataset=settings.dataset or inferred)
    settings = _fit_to_data(settings, data, log)
    ood_data = _ood_dataset(data, settings, max_data_bytes)
    if source is not None:
        _check_given_record(source, model, data, settings)
    _check_outputs(model, model_path, data, settings)
    log(f"model: {model.name} from {model_path}; data: {data.name} ({len(data.x_test)} test "
        f"examples, from {data.source})")

    with claim(out, "subnet.analyze", OUTPUTS, fresh=not resume):
        plan = None
        if settings.time_budget is not None:
            settings, plan = _planned(model, data, settings, out, resume, source, log)
        if source is not None and not (out / "record").exists():
            _copy_tree_atomic(Path(source.path), out / "record")
        return _run(model, model_path, out, settings, data, formats=formats,
                    resume=resume, trust_model=trust_model, progress=progress,
                    command=command, log=log, started=started, ood_data=ood_data,
                    executor=executor, plan=plan)


def _planned(model, data, settings: Settings, out: Path, resume: bool, source, log):
    """``settings`` sized to their time budget from the model's measured costs
    (:mod:`subnet.plan`), and the plan; a resumed run reuses the plan it made (its measured
    costs would differ, and with them the settings its finished stages were made with)."""
    from subnet.models import dropout_layers, with_dropout
    from subnet.plan import Plan, measure, plan

    asked = json.dumps(settings.to_dict(), sort_keys=True)
    saved = out / "state" / "plan.json"
    if resume and saved.is_file():
        stored = json.loads(saved.read_text())
        if stored.get("asked") == asked:
            made = Plan.from_dict(stored["plan"])
            log("time budget: the plan of the run being resumed")
            return dataclasses.replace(settings, **made.values), made
    sized = set(SIZED if settings.sized is None else settings.sized)
    if source is not None:  # a given record fixes its masks and examples
        sized -= {"masks", "examples"}
    deterministic = with_dropout(model, on=False)
    n_train = 0 if data.x_train is None else len(data.x_train)
    start = time.perf_counter()
    costs = measure(deterministic, data.x_test, data.x_train, data.y_train, seed=settings.seed)
    values = {name: getattr(settings, name) for name in SIZED}
    values["calibration_examples"] = min(values["calibration_examples"] or
                                         settings.selection_examples, max(n_train, 10))
    dropout = bool(dropout_layers(model))
    about = dict(n_train=n_train, n_test=len(data.x_test),
                 auto_keep=settings.rate == "auto" and not dropout, dropout=dropout,
                 methods=settings.methods,
                 budgets=settings.budgets, repeats=settings.repeats)
    made = plan(values, costs, settings.time_budget, grow=not settings.quick, **about)
    kept = {name: (made.values[name] if name in sized else values[name]) for name in SIZED}
    made = dataclasses.replace(
        made, values=kept, changes={k: v for k, v in made.changes.items() if k in sized})
    log(f"time budget {settings.time_budget:.0f} s: costs measured in "
        f"{time.perf_counter() - start:.1f} s (one masked evaluation "
        f"{costs.mask_example * 1e6:.0f} us, one training example "
        f"{costs.train_example * 1e6:.0f} us); " + (", ".join(
            f"{k} {a} -> {b:.3g}" if isinstance(b, float) else f"{k} {a} -> {b}"
            for k, (a, b) in made.changes.items()) or "nothing changed"))
    saved.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, json.dumps({"asked": asked, "plan": made.to_dict()}))
    return dataclasses.replace(settings, **kept), made


def _copy_tree_atomic(source: Path, dest: Path) -> None:
    """Copies a folder beside ``dest`` and renames it into place, so ``dest`` appears whole."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(model, model_path: Path, out: Path, settings: Settings, data, *, formats,
         resume: bool, trust_model: bool, progress: bool, command, log, started: float,
         ood_data=None, executor=None, plan=None) -> dict:
    """The stages of :func:`analyze`, in an output folder it has claimed and locked."""
    model_sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps([settings.cache_key(), model_sha, data.fingerprint()],
                                    sort_keys=True).encode()).hexdigest()[:16]
    state = _State(out, key, resume)
    timings: dict = {}
    earlier = state.get("timings") or {}  # seconds of the stages an earlier run finished
    reused: list = []

    def stage(name, compute):
        start = time.perf_counter()
        value = state.get(name)
        if value is None:
            log(f"stage {name} ...")
            value = compute()
            state.put(name, value)
            timings[name] = round(time.perf_counter() - start, 1)
            state.put("timings", {**earlier, **timings})
            log(f"stage {name}: done in {timings[name]:.1f} s")
        else:
            log(f"stage {name}: reused from an earlier run (--resume)")
            timings[name] = float(earlier.get(name, 0.0))
            reused.append(name)
        return value

    from subnet.models import with_dropout

    deterministic = with_dropout(model, on=False)
    record_dir = out / "record"
    chosen = stage("keep", lambda: _keep(model, deterministic, data, settings, record_dir))
    keep = KeepProbabilities.from_dict(chosen["keep"])
    rate = keep.rates
    blog = stage("blog", lambda: _blog(model, deterministic, data, settings, keep))
    recorded = stage("record", lambda: _record(deterministic, data, settings, keep, record_dir,
                                                progress, executor))
    importance = stage("importance", lambda: _importance(record_dir))
    comparison = stage("comparison", lambda: _comparison(
        deterministic, data, settings, keep, out, progress, parent=model, executor=executor,
        dense_accuracy=blog["accuracy_dropout_off"]
        if blog.get("n_test") == len(data.x_test) else None))
    uncertainty = stage("uncertainty", lambda: _uncertainty(
        model, data, settings, rate, ood_data, _subnetwork_files(comparison, settings),
        trust=trust_model, rescale=keep.rescale))
    answer = _answer(comparison, settings, blog)
    answer["subnetwork"] = _save_subnetwork(answer, out)
    keep_section = _keep_section(chosen, recorded)
    sentence = _chance_sentence(keep_section)
    if sentence:  # one sentence, after the answer's own
        answer["sentences"] = [*answer.get("sentences", []), sentence]
    blog = {**blog, "mask_accuracy": recorded["mask_accuracy"], "record": recorded["record"]}
    if blog.get("accuracy_dropout_on_mean") is None:  # no Dropout layer: unit masks stand in
        accuracy = np.asarray(recorded["mask_accuracy"])
        blog.update(accuracy_dropout_on_mean=float(accuracy.mean()),
                    accuracy_dropout_on_std=float(accuracy.std(ddof=1)),
                    passes=len(accuracy), ensemble_accuracy=recorded["vote_accuracy"])
    results = {
        "schema_version": SCHEMA_VERSION, "subnet_version": subnet.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else [],
        "config": {**settings.to_dict(), "formats": list(formats), "resume": resume,
                   "trust_model": trust_model, "rates": rate, "key": key},
        "versions": subnet.versions(),
        "inputs": {"model": {"path": str(model_path), "sha256": model_sha,
                             "bytes": model_path.stat().st_size},
                   "dataset": {"name": data.name, "source": str(data.source),
                               "layout": data.layout, "fingerprint": data.fingerprint(),
                               "n_train": 0 if data.x_train is None else len(data.x_train),
                               "n_test": len(data.x_test)}},
        # Each stage's seconds as computed, also when this run reused it; the total is the
        # computation behind these results: this run's plus the reused stages'.
        "timings": {**timings, "total": round(time.perf_counter() - started + sum(
            timings[name] for name in reused), 1)},
        "reused_stages": reused,
        "model": _model_summary(deterministic, rate),
        "keep": keep_section,
        "blog": blog,
        "robustness": recorded["robustness"],
        "importance": importance,
        "comparison": comparison,
        "uncertainty": uncertainty,
        "answer": answer,
        "plan": None if plan is None else plan.to_dict(),
    }
    results = _jsonable(results)
    from subnet.report.schema import validate_results

    try:  # a results.json that its own reader refuses is never written: that is a bug here
        validate_results(results)
    except InputError as err:
        raise RuntimeError(f"the results do not match their schema: {err}") from err
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    wanted = [f for f in formats if f in ("html", "pdf")]
    if wanted:
        from subnet.report import write_reports

        log("writing reports ...")
        write_reports(results, out, formats=wanted)
    log(f"done in {time.perf_counter() - started:.0f} s: " + ", ".join(
        str(out / name) for name in ["results.json"] + [f"report.{f}" for f in wanted]))
    return results


class _Log:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if self.enabled:  # names and paths come from files: no control characters reach the tty
            print(f"subnet.analyze: {clean(message)}", file=sys.stderr, flush=True)


class _State:
    """Finished stages as JSON files under ``DIR/state``, valid for one settings key."""

    def __init__(self, out: Path, key: str, resume: bool):
        self.dir = out / "state"
        self.key = key
        # A run that does not resume found its folder emptied of subnet's outputs by claim().
        if resume and (self.dir / "key").exists() and (self.dir / "key").read_text() != key:
            raise InputError(f"--resume: {clean(str(out))!r} holds an analysis with other "
                             "settings, model or data; drop --resume to start again, or choose "
                             "another --out.")
        if resume:  # the results of the run being resumed no longer describe this folder
            for name in _FINAL_OUTPUTS:
                (out / name).unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "key", key)

    def get(self, name: str):
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, name: str, value) -> None:
        atomic_write_text(self.dir / f"{name}.json", json.dumps(_jsonable(value)))


def _model_summary(model, rate: dict) -> dict:
    from subnet.engine.chain import analyse_chain
    from subnet.extraction import model_cost
    from subnet.models import original_names

    table = analyse_chain(model, rate).table
    cost = model_cost(model)
    # Names TensorFlow refuses were renamed on loading; the report shows the originals too.
    renamed = {internal: str(original) for internal, original in original_names(model).items()}
    return {"name": model.name, "original_names": renamed,
            "params": int(model.count_params()), "flops": int(cost["flops"]),
            "input_shape": [int(d) for d in model.inputs[0].shape[1:]],
            "classes": int(model.outputs[0].shape[-1]),
            "sites": [{"name": s.name, "kind": s.kind, "units": int(s.units),
                       "keep": float(s.keep), "dropout_rate": float(1 - s.keep),
                       "mask_layer": s.mask_layer} for s in table]}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
