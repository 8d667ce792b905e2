"""Executors: a record made by Ray tasks or worker processes (or in-process through the same
path) equals the record one process makes, chunk file for chunk file, also when a worker dies
mid-record; and the float32 probabilities behind it, to the last bit, as the workers compute with
this process's TensorFlow thread count. A comparison through worker processes equals the
sequential one; commands run some at a time."""

import filecmp
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import subnet
from subnet.distributed import (
    LocalExecutor,
    ProcessExecutor,
    RayExecutor,
    executor_from_address,
    run_commands,
)
from subnet.record import AdaptiveStop, MaskRecord, RecordWriter, main, record_masks
from subnet.runtime import intra_op_threads
from tests.helpers import skip_or_fail

N_MASKS, CHUNK = 40, 8


@pytest.fixture(scope="module")
def model():
    return subnet.with_dropout(subnet.seed_cnn(16, seed=0), on=False)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((40, 28, 28, 1), dtype=np.float32), np.arange(40) % 10


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module; executors made inside it join it."""
    try:
        import ray  # noqa: F401
    except ImportError:
        skip_or_fail("Ray is not installed here (pip install 'subnet[ray]')")
    with RayExecutor("local", num_cpus=2) as executor:
        yield executor


def _record(model, data, out, **options):
    return record_masks(model, *data, N_MASKS, seed=3, rate=0.5, out=out, chunk_size=CHUNK,
                        progress=False, **options)


@pytest.fixture(scope="module")
def whole(model, data, tmp_path_factory):
    return Path(_record(model, data, tmp_path_factory.mktemp("whole") / "r").path)


def _assert_same_record(a, b):
    names = sorted(p.name for p in Path(a).glob("chunk_*.npz"))
    assert names == sorted(p.name for p in Path(b).glob("chunk_*.npz"))
    assert len(names) == N_MASKS // CHUNK
    for name in names:
        assert filecmp.cmp(Path(a) / name, Path(b) / name, shallow=False), name
    for name in ("labels.npy", "example_indices.npy"):
        assert filecmp.cmp(Path(a) / name, Path(b) / name, shallow=False), name
    meta_a, meta_b = (json.loads((Path(p) / "meta.json").read_text()) for p in (a, b))
    for meta in (meta_a, meta_b):
        meta.pop("created")
    assert meta_a == meta_b


def _spy_on_probabilities(monkeypatch):
    """{record folder name: {chunk start: the float32 true-class probabilities}}, as the driver
    receives them before they are stored as float16 (which hides most last-bit differences)."""
    seen = {}
    original = RecordWriter.write_chunk

    def spy(self, start, masks, predicted, true_prob):
        seen.setdefault(Path(self.path).name, {})[start] = np.array(true_prob, np.float32)
        return original(self, start, masks, predicted, true_prob)

    monkeypatch.setattr(RecordWriter, "write_chunk", spy)
    return seen


def _assert_same_probabilities(a, b):
    assert sorted(a) == sorted(b) and a
    for start in a:
        assert a[start].tobytes() == b[start].tobytes(), f"chunk at {start}"


def test_bad_executor_settings_are_one_line_errors():
    for options, word in (({"address": ""}, "address"), ({"num_cpus": 0}, "num_cpus"),
                          ({"cpus_per_task": 0}, "cpus_per_task"),
                          ({"gpus_per_task": -1}, "gpus_per_task"),
                          ({"threads_per_task": 0}, "threads_per_task"),
                          ({"max_retries": -1}, "max_retries"),
                          ({"address": "auto", "num_cpus": 2}, "num_cpus")):
        with pytest.raises(subnet.InputError, match=word) as error:
            RayExecutor(**options)
        assert "\n" not in str(error.value)
    assert isinstance(executor_from_address(None), LocalExecutor)
    assert executor_from_address("local").num_cpus >= 1
    assert executor_from_address("auto").address == "auto"
    assert executor_from_address("processes:3").workers == 3
    assert executor_from_address("processes").workers >= 1
    for address in ("processes:0", "processes:x", "processes:"):
        with pytest.raises(subnet.InputError, match="processes:N") as error:
            executor_from_address(address)
        assert "\n" not in str(error.value)
    for options, word in (({"workers": 0}, "workers"), ({"threads_per_task": 1.5},
                                                        "threads_per_task")):
        with pytest.raises(subnet.InputError, match=word):
            ProcessExecutor(**options)


def test_an_executor_argument_is_checked(model, data, tmp_path):
    with pytest.raises(subnet.InputError, match="executor"):
        _record(model, data, tmp_path / "a", executor=object())
    with pytest.raises(subnet.InputError, match="in order"):
        _record(model, data, tmp_path / "b", executor=LocalExecutor(),
                stop=AdaptiveStop(keep_units=4, min_masks=8))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_in_process_executor_makes_the_same_record(model, data, whole, tmp_path):
    """An in-process executor records here, as without one."""
    _assert_same_record(whole, _record(model, data, tmp_path / "r",
                                       executor=LocalExecutor()).path)


def test_ray_tasks_make_the_same_record(model, data, ray_local, tmp_path, monkeypatch):
    seen = _spy_on_probabilities(monkeypatch)
    plain = _record(model, data, tmp_path / "plain")
    record = _record(model, data, tmp_path / "r", executor=ray_local)
    assert record.is_complete
    assert record.meta["intra_op_threads"] == plain.meta["intra_op_threads"] == \
        LocalExecutor().threads == ray_local.threads
    _assert_same_record(plain.path, record.path)
    _assert_same_probabilities(seen["plain"], seen["r"])


@pytest.fixture(scope="module")
def processes():
    """Two worker processes for the module, computing with this process's thread count."""
    with ProcessExecutor(2) as executor:
        yield executor


class TaskFailed(Exception):
    """An exception of the tests' own, which the driver must receive as itself."""


def _fail_on(value, bad):
    if value == bad:
        raise TaskFailed(f"task {value} failed", value)
    return value * 10


def test_worker_processes_make_the_same_record(model, data, whole, processes, tmp_path,
                                               monkeypatch):
    seen = _spy_on_probabilities(monkeypatch)
    plain = _record(model, data, tmp_path / "plain")
    record = _record(model, data, tmp_path / "r", executor=processes)
    assert record.is_complete and processes.threads == LocalExecutor().threads
    _assert_same_record(plain.path, record.path)
    _assert_same_probabilities(seen["plain"], seen["r"])


def test_a_task_exception_reaches_the_driver_as_itself(processes):
    shared = processes.put(3)  # a value put once reaches the task as itself
    assert sorted(processes.map_unordered(_fail_on, [(1, shared), (2, shared)])) == \
        [(0, 10), (1, 20)]
    with pytest.raises(TaskFailed) as error:
        list(processes.map_unordered(_fail_on, [(1, 9), (3, shared)]))
    assert type(error.value) is TaskFailed and error.value.args == ("task 3 failed", 3)
    assert dict(processes.map_unordered(_fail_on, [(4, 0)])) == {0: 40}  # the pool goes on


def test_each_worker_computes_with_the_executors_thread_count():
    with ProcessExecutor(1, threads_per_task=1) as executor:
        assert executor.threads == 1
        assert list(executor.map_unordered(intra_op_threads, [()])) == [(0, 1)]


class _CrashOnce(RayExecutor):
    """Kills the worker process that runs the chunk starting at ``at``, the first time only."""

    def __init__(self, marker: Path, at: int):
        super().__init__("local", num_cpus=2)
        self.marker, self.at = str(marker), at

    def map_unordered(self, fn, calls):
        marker, at = self.marker, self.at

        def crashing(job, start, stop):
            if start == at and os.path.exists(marker):
                os.remove(marker)
                os._exit(1)  # the process dies mid-record, as a killed or lost worker does
            return fn(job, start, stop)

        return super().map_unordered(crashing, calls)


def test_a_worker_killed_mid_record_is_retried_to_the_same_record(model, data, whole,
                                                                 ray_local, tmp_path):
    marker = tmp_path / "crash-once"
    marker.write_text("")
    with _CrashOnce(marker, at=2 * CHUNK) as executor:
        record = _record(model, data, tmp_path / "r", executor=executor)
    assert not marker.exists()  # the crash happened
    _assert_same_record(whole, record.path)


def test_an_interrupted_ray_record_resumes_to_the_same_record(model, data, whole, ray_local,
                                                             tmp_path):
    out = tmp_path / "r"
    _record(model, data, out, masks=range(0, 16))  # the driver stopped after two chunks
    record = _record(model, data, out, resume=True, executor=ray_local)
    _assert_same_record(whole, record.path)


def test_the_command_line_records_through_ray(whole, model, data, ray_local, tmp_path, capsys,
                                             monkeypatch):
    """As a user runs it: a --ray local record against a plain one, both with the defaults."""
    seen = _spy_on_probabilities(monkeypatch)
    model.save(tmp_path / "model.keras")
    x, y = data
    np.savez(tmp_path / "data.npz", x_test=x, y_test=y)
    common = [str(tmp_path / "model.keras"), "--dataset", str(tmp_path / "data.npz"),
              "--masks", str(N_MASKS), "--examples", "40", "--seed", "3", "--rate", "0.5",
              "--chunk-size", str(CHUNK), "--quiet"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--ray", "local"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["executor"] for line in lines] == ["local", "ray"]
    _assert_same_record(tmp_path / "plain", tmp_path / "ray")
    _assert_same_probabilities(seen["plain"], seen["ray"])


def test_a_record_computed_with_another_thread_count_is_not_mixed(model, data, ray_local,
                                                                   tmp_path):
    """Workers told to use another thread count record it, and the record refuses to be
    continued here with this process's count, naming how to continue it."""
    from subnet.runtime import intra_op_threads

    other = 1 if intra_op_threads() > 1 else 2
    with RayExecutor("local", threads_per_task=other) as executor:  # joins ray_local's Ray
        assert executor.threads == other
        record = _record(model, data, tmp_path / "r", masks=range(0, 16), executor=executor)
    assert record.meta["intra_op_threads"] == other
    with pytest.raises(subnet.RecordError, match=rf"intra_op_threads.*set "
                                                 rf"TF_NUM_INTRAOP_THREADS={other} "):
        _record(model, data, tmp_path / "r", resume=True)
    assert MaskRecord.load(tmp_path / "r").n_masks == 16


# ------------------------------------------------------------------------ comparison grids

def _comparable(comparison):
    """The rows and the dense entry without what depends on the machine (seconds, files)."""
    def clean(row):
        return {k: v for k, v in row.items() if not k.endswith("_seconds") and k != "model_file"}
    return [clean(r) for r in comparison.rows], clean(comparison.dense)


@pytest.mark.slow
def test_a_comparison_grid_through_ray_equals_the_sequential_one(mnist, ray_local, tmp_path):
    from subnet.baselines import tfmot_available
    from subnet.comparison import compare

    model = subnet.seed_cnn(16, conv_filters=(4, 6), seed=1)
    data = mnist.subset(n_train=1200, n_test=64)
    methods = ("magnitude", "random", "reinit") + (("tfmot",) if tfmot_available() else ())
    settings = dict(methods=methods, budgets=(0.5,), seeds=(1,), finetune_epochs=0.05,
                    selection_examples=200, measure_latency=False, progress=False,
                    reference_method="magnitude")
    sequential = compare(model, data, out=tmp_path / "a.json", models_dir=tmp_path / "a",
                         **settings)
    distributed = compare(model, data, out=tmp_path / "b.json", models_dir=tmp_path / "b",
                          executor=ray_local, **settings)
    assert len(distributed.rows) == len(methods)
    assert _comparable(distributed) == _comparable(sequential)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(files) == 2


def test_a_comparison_grid_in_worker_processes_equals_the_sequential_one(mnist, processes,
                                                                         tmp_path):
    from subnet.comparison import compare

    model = subnet.seed_cnn(16, conv_filters=(4, 6), seed=1)
    data = mnist.subset(n_train=600, n_test=64)
    settings = dict(methods=("magnitude", "random", "reinit"), budgets=(0.5,), seeds=(1,),
                    finetune_epochs=0.05, selection_examples=200, measure_latency=False,
                    progress=False, reference_method="magnitude")
    sequential = compare(model, data, out=tmp_path / "a.json", models_dir=tmp_path / "a",
                         **settings)
    parallel = compare(model, data, out=tmp_path / "b.json", models_dir=tmp_path / "b",
                       executor=processes, **settings)
    assert len(parallel.rows) == 3 and "finetuned" in parallel.dense
    assert _comparable(parallel) == _comparable(sequential)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(files) == 2
    for name in files:
        assert (tmp_path / "b" / name).stat().st_size > 0


@pytest.mark.slow
def test_a_thorough_comparison_through_ray_equals_the_sequential_one(mnist, ray_local,
                                                                    tmp_path):
    from subnet.frontier import compare_gradual
    from subnet.protocol import Protocol

    model = subnet.seed_cnn(16, conv_filters=(4, 6), seed=1)
    data = mnist.subset(n_train=900, n_test=64)
    protocol = Protocol.preset("thorough", budgets=(0.5,), seeds=(1,), validation=200,
                               finetune_epochs=1, patience=1, teacher_passes=None,
                               retrain_epochs=0.1, step=0.5)
    runs = [compare_gradual(model, data, ("magnitude", "random"), protocol,
                            out=tmp_path / name, models_dir=tmp_path / f"{name}_models",
                            progress=False, executor=executor)
            for name, executor in (("a", None), ("b", ray_local))]
    assert len(runs[1].rows) == 2  # methods x seeds
    assert _comparable(runs[1]) == _comparable(runs[0])
    assert sorted(p.name for p in (tmp_path / "a_models").iterdir()) == \
        sorted(p.name for p in (tmp_path / "b_models").iterdir())


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"])
def test_an_unreachable_cluster_is_a_one_line_error_at_once(model, data, address, tmp_path,
                                                           capsys):
    try:
        import ray  # noqa: F401
    except ImportError:
        skip_or_fail("Ray is not installed here (pip install 'subnet[ray]')")
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", x_test=data[0], y_test=data[1])
    code = main([str(tmp_path / "model.keras"), "--dataset", str(tmp_path / "data.npz"),
                 "--masks", "8", "--examples", "8", "--rate", "0.5", "--quiet",
                 "--out", str(tmp_path / "r"), "--ray", address])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "Ray" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_commands_run_some_at_a_time_and_report_how_each_ended(tmp_path):
    script = ("import os, sys; print(os.environ['TF_NUM_INTRAOP_THREADS'], "
              "os.environ['OMP_NUM_THREADS']); sys.exit(int(sys.argv[1]))")
    commands = [[sys.executable, "-c", script, str(code)] for code in (0, 2, 0)]
    started = []
    results = dict(run_commands(commands, 2, threads=3, on_start=started.append))
    assert sorted(results) == sorted(started) == [0, 1, 2]
    assert [results[i].returncode for i in range(3)] == [0, 2, 0]
    assert [results[i].ok for i in range(3)] == [True, False, True]
    assert results[0].stdout == "3 3\n" and results[0].command == tuple(commands[0])
    logs = [tmp_path / "logs" / f"{i}.log" for i in range(3)]
    logs[0].parent.mkdir()
    logs[0].write_text("before\n")
    results = dict(run_commands(commands, 1, threads=1, logs=logs))
    assert logs[0].read_text() == "before\n1 1\n" and results[1].stdout == ""
    for options, word in (({"jobs": 0}, "jobs"), ({"threads": 0}, "threads"),
                          ({"logs": logs[:1]}, "logs")):
        with pytest.raises(subnet.InputError, match=word):
            list(run_commands(commands, **{"jobs": 1, **options}))
