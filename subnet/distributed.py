"""Executors: where subnet's independent pieces of work run, one process or a Ray cluster.

Two kinds of subnet's work split into independent tasks whose results do not depend on where or
in which order they run: a record's chunks of masks (mask i is a pure function of (seed, i);
:func:`subnet.record_masks` with ``executor=``) and a comparison's cells (each with its own
seed). An executor runs such tasks and hands their results back as they finish; the caller (the
*driver*) writes every result itself, so the output is the one a single process makes, byte for
byte, and a driver that is interrupted resumes from what it wrote.

- :class:`LocalExecutor` runs the tasks one after another in this process (the default).
- :class:`ProcessExecutor` runs them in a pool of worker processes on this machine
  (``concurrent.futures`` with the "spawn" start method), ``workers`` at once. A task's
  exception reaches the driver as itself; a worker that dies fails the run
  (``concurrent.futures.process.BrokenProcessPool``), nothing is retried.
- :class:`RayExecutor` runs them as `Ray <https://docs.ray.io>`_ tasks on a local Ray instance
  (``address="local"``) or a running cluster (``"auto"`` or ``"ray://HOST:PORT"``). A task whose
  worker dies (a killed process, a lost node) is run again, up to ``max_retries`` times; an
  exception a task raises is not retried (it would raise again) and reaches the driver as
  itself. Ray is an optional extra: ``pip install 'subnet[ray]'``.

Tasks receive large inputs (the model as ``.keras`` bytes, the examples) through
:meth:`put`, once per run, rather than once per task.

TensorFlow's CPU matrix products and convolutions sum in an order that depends on how many
threads one operation is split over. Measured on the blog's network (96 masks x 1,000 MNIST test
images, 2 cores): with 1 and with 2 threads, 3.3 % of the float32 true-class probabilities
differ, by at most 1.4e-6, and 1 of the 96,000 values a record stores as float16. So an
executor's tasks compute with one thread count, its ``threads``: by default the calling
process's (:func:`subnet.runtime.intra_op_threads`), so that a task computes what this process
would, to the last bit, on the same kind of machine. Each worker process is started with
``TF_NUM_INTRAOP_THREADS`` (and ``OMP_NUM_THREADS``) set to it and one inter-op thread
(:func:`thread_env`), before it imports TensorFlow.

Some work is a *command* rather than a function (an analysis script that runs its own cells as
child processes, each resuming from its files): :func:`run_commands` runs such commands ``jobs``
at a time, with the same thread settings, and reports how each ended.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Self

from subnet.errors import InputError
from subnet.validation import check_int, check_number

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

__all__ = ["CommandResult", "LocalExecutor", "ProcessExecutor", "RayExecutor",
           "executor_from_address", "run_commands", "thread_env"]


class LocalExecutor:
    """Runs tasks in this process, in the order given: the reference a distributed run equals."""

    name = "local"

    @property
    def threads(self) -> int:
        """TensorFlow's intra-op thread count the tasks compute with: this process's."""
        from subnet.runtime import intra_op_threads

        return intra_op_threads()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def put(self, value: Any) -> Any:
        """The value itself (there is no object store to place it in)."""
        return value

    def map_unordered(self, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]
                      ) -> Iterator[tuple[int, Any]]:
        """Yields ``(i, fn(*calls[i]))`` for each call, as each finishes (here: in order)."""
        for i, args in enumerate(calls):
            yield i, fn(*args)


def thread_env(threads: int) -> dict[str, str]:
    """The environment variables that make a new process's TensorFlow compute with ``threads``
    intra-op threads (and one inter-op thread), and OpenMP with ``threads``: what every
    executor's workers and :func:`run_commands`' children start with.

    Args:
        threads: Intra-op (and OpenMP) threads, >= 1.

    Returns:
        ``{"TF_NUM_INTRAOP_THREADS": ..., "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": ...}``.
    """
    return {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": str(threads)}


def _check_count(name: str, value: object, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    check_int(name, value, low=1, note="or None" if allow_none else "")


class _OtherProcesses:
    """What the executors whose tasks run in other processes share: the thread count the tasks
    compute with, and a context that starts them and shuts them down."""

    threads_per_task: int | None

    @property
    def threads(self) -> int:
        """TensorFlow's intra-op thread count the tasks compute with: ``threads_per_task``, or
        this process's when it is None."""
        if self.threads_per_task is not None:
            return self.threads_per_task
        from subnet.runtime import intra_op_threads

        return intra_op_threads()

    def start(self) -> Self:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class ProcessExecutor(_OtherProcesses):
    """Runs tasks in worker processes on this machine, ``workers`` at once.

    A pool of ``concurrent.futures`` worker processes, started with the "spawn" method (a fresh
    interpreter: no TensorFlow state is inherited from this process), each with TensorFlow's
    thread count set to :attr:`threads` before it imports TensorFlow. A value given to
    :meth:`put` is pickled once into a temporary file, read once per worker. A task's exception
    reaches the driver as itself (its traceback in the worker is its ``__cause__``); a worker
    that dies (killed, out of memory) fails the run with
    ``concurrent.futures.process.BrokenProcessPool``: tasks are not retried (Ray's are).

    Use it as a context manager (or call :meth:`start` and :meth:`shutdown`).

    Args:
        workers: Worker processes (tasks at once), >= 1 (None: the CPUs this process may run
            on).
        threads_per_task: TensorFlow (intra-op) and OpenMP threads in each worker. None (the
            default): as many as this process's TensorFlow uses, so that a task computes
            exactly what this process would (see the module's docstring), even where
            ``workers`` times that is more threads than the machine has cores. For throughput
            give it explicitly (e.g. 1 with one worker per core); a single process equals it
            when started with ``TF_NUM_INTRAOP_THREADS`` set to it.

    Raises:
        InputError: If an argument is not None or an int >= 1.
    """

    name = "processes"

    def __init__(self, workers: int | None = None, *, threads_per_task: int | None = None):
        _check_count("workers", workers)
        _check_count("threads_per_task", threads_per_task)
        if workers is None:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
                (os.cpu_count() or 1)
        self.workers, self.threads_per_task = workers, threads_per_task
        self._pool: ProcessPoolExecutor | None = None
        self._folder: Path | None = None  # where put() stores its values, while started
        self._stored = 0

    def start(self) -> ProcessExecutor:
        """Makes the pool (its processes start with the first tasks); a no-op when started."""
        if self._pool is None:
            import concurrent.futures
            import multiprocessing
            import tempfile

            self._folder = Path(tempfile.mkdtemp(prefix="subnet-processes-"))
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(thread_env(self.threads),))
        return self

    def shutdown(self) -> None:
        """Stops the workers (after the tasks they are running) and removes what :meth:`put`
        stored."""
        import shutil

        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._pool, self._folder = None, None

    def _started(self) -> tuple[ProcessPoolExecutor, Path]:
        """The pool and the folder of stored values, starting the executor if need be."""
        self.start()
        pool, folder = self._pool, self._folder
        assert pool is not None and folder is not None  # start() made both
        return pool, folder

    def put(self, value: Any) -> Any:
        """Pickles ``value`` once to a temporary file; a task given what this returns as one
        of its arguments gets the value (read once per worker process)."""
        import pickle

        _, folder = self._started()
        self._stored += 1
        path = folder / f"value_{self._stored}.pickle"
        path.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        return _Stored(str(path))

    def map_unordered(self, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]
                      ) -> Iterator[tuple[int, Any]]:
        """Runs ``fn(*args)`` for each ``args`` of ``calls`` in the workers; yields ``(i,
        result)`` as each finishes. Tasks not yet started when the caller stops iterating (or
        one task raises) are cancelled.

        ``fn``, its arguments and its result are pickled: ``fn`` must be importable by the
        workers (a module-level function of a module they can import).
        """
        import concurrent.futures

        pool, _ = self._started()
        pending = {pool.submit(_run_task, fn, args): i for i, args in enumerate(calls)}
        try:
            while pending:
                done, _ = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    yield index, future.result()
        finally:
            for future in pending:
                future.cancel()


class _Stored:
    """A value :meth:`ProcessExecutor.put` stored: the path of its pickle."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> tuple[type[_Stored], tuple[str]]:
        return _Stored, (self.path,)


_LOADED: dict[str, Any] = {}  # in a worker: the values put, by path, read once


def _start_worker(env: dict[str, str]) -> None:
    """A worker's initializer: TensorFlow's thread count, before TensorFlow is imported."""
    os.environ.update(env)
    if "tensorflow" in sys.modules:  # imported already (by the main module): set it there
        import tensorflow as tf

        threads = int(env["TF_NUM_INTRAOP_THREADS"])
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def _run_task(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """In a worker: ``fn(*args)``, with the values :meth:`ProcessExecutor.put` stored read."""
    import pickle

    values = []
    for arg in args:
        if isinstance(arg, _Stored):
            if arg.path not in _LOADED:
                _LOADED[arg.path] = pickle.loads(Path(arg.path).read_bytes())
            arg = _LOADED[arg.path]
        values.append(arg)
    return fn(*values)


class RayExecutor(_OtherProcesses):
    """Runs tasks as Ray tasks, each in a worker process of its own.

    Use it as a context manager (or call :meth:`start` and :meth:`shutdown`); a Ray instance
    this executor started is shut down at the end, one that was already running is left as it
    was.

    Args:
        address: ``"local"`` starts a Ray instance on this machine; ``"auto"`` connects to the
            cluster this machine belongs to (``ray start --head`` ran here or on a head node it
            can reach); any other value is passed to ``ray.init(address=...)``, e.g.
            ``"ray://head:10001"``.
        num_cpus: CPUs of a local instance (None: all of this machine's); only with
            ``address="local"``.
        cpus_per_task: CPUs Ray reserves for each task (> 0).
        gpus_per_task: GPUs (or a fraction of one) Ray reserves for each task (>= 0); Ray
            shows a task only the GPUs it was given (``CUDA_VISIBLE_DEVICES``), and TensorFlow
            places the work there. 0: CPUs only.
        threads_per_task: TensorFlow (intra-op) and OpenMP threads in each task's worker.
            None (the default): as many as this process's TensorFlow uses, so that a task
            computes exactly what this process would (a record through Ray equals the one
            this process makes, byte for byte), even where that puts more threads than
            ``cpus_per_task`` on a machine. For throughput on a cluster give it (and
            ``cpus_per_task``) explicitly: a record then stores that count, and a single
            process equals it when started with ``TF_NUM_INTRAOP_THREADS`` set to it.
        max_retries: Times a task whose worker process dies is run again (>= 0).

    Raises:
        InputError: If an argument is invalid (at construction), or Ray is not installed or no
            cluster answers at ``address`` (at :meth:`start`).
    """

    name = "ray"

    def __init__(self, address: str = "local", *, num_cpus: int | None = None,
                 cpus_per_task: float = 1, gpus_per_task: float = 0,
                 threads_per_task: int | None = None, max_retries: int = 3):
        if not isinstance(address, str) or not address.strip():
            raise InputError(f"Invalid value for argument `address`: expected 'local', 'auto' "
                             f"or a Ray address such as 'ray://head:10001'. Received: "
                             f"address={address!r}")
        if num_cpus is not None:
            check_int("num_cpus", num_cpus, low=1, note="or None")
        if num_cpus is not None and address != "local":
            raise InputError(f"`num_cpus` sizes a local Ray instance; a cluster at "
                             f"{address!r} has its own. Leave num_cpus=None.")
        check_number("cpus_per_task", cpus_per_task, low=0.0, low_open=True)
        check_number("gpus_per_task", gpus_per_task, low=0.0)
        if threads_per_task is not None:
            check_int("threads_per_task", threads_per_task, low=1, note="or None")
        check_int("max_retries", max_retries, low=0)
        self.address, self.num_cpus = address, num_cpus
        self.cpus_per_task, self.threads_per_task = cpus_per_task, threads_per_task
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        self._ray: ModuleType | None = None  # the ray module, once started
        self._owned = False

    def start(self) -> RayExecutor:
        """Starts (``"local"``) or joins the Ray instance; a no-op when already started."""
        if self._ray is not None:
            return self
        try:
            import ray
        except ImportError:
            raise InputError("Ray is not installed: install it with pip install 'subnet[ray]' "
                             "(or pip install ray), or run without a Ray executor.") from None
        if self.address not in ("local", "auto"):
            _check_reachable(self.address)
        if not ray.is_initialized():
            local = self.address == "local"
            try:
                # Ray lowers its workers' priority by 15 by default; on a busy machine that
                # starves them (a TensorFlow import took 90 s instead of 13). The workers of a
                # local instance do this process's work, so they run at its priority.
                system: dict[str, Any] = \
                    {"_system_config": {"worker_niceness": 0}} if local else {}
                ray.init(address=None if local else self.address,
                         num_cpus=self.num_cpus if local else None, include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=False, **system)
            except ConnectionError as err:
                raise InputError(f"No Ray cluster answered at address {self.address!r} "
                                 f"({str(err).splitlines()[0]}); start one with `ray start "
                                 f"--head`, or use a local instance (address 'local').") from None
            self._owned = True
        self._ray = ray
        return self

    def shutdown(self) -> None:
        """Shuts down the Ray instance if this executor started it."""
        if self._ray is not None and self._owned:
            self._ray.shutdown()
        self._ray, self._owned = None, False

    def _started(self) -> ModuleType:
        """The ray module, starting the executor if need be."""
        self.start()
        ray = self._ray
        assert ray is not None  # start() set it
        return ray

    def put(self, value: Any) -> Any:
        """Places ``value`` in Ray's object store once; tasks given the reference get the value."""
        return self._started().put(value)

    def map_unordered(self, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]
                      ) -> Iterator[tuple[int, Any]]:
        """Runs ``fn(*args)`` for each ``args`` of ``calls`` as a Ray task; yields ``(i, result)``
        as each finishes. Tasks not yet finished when the caller stops iterating (or one task
        raises) are cancelled.

        ``fn`` must be importable by the workers (a module-level function of an installed
        package) or picklable by value (a function defined in a test or a notebook).
        """
        ray = self._started()
        remote = ray.remote(fn).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
            max_retries=self.max_retries, retry_exceptions=False,
            runtime_env={"env_vars": {**thread_env(self.threads),
                                      "TF_CPP_MIN_LOG_LEVEL": "2"}})
        pending = {remote.remote(*args): i for i, args in enumerate(calls)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                yield index, ray.get(done[0])
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuses a ``[ray://]HOST:PORT`` address nothing listens at, in one line, within
    ``timeout`` seconds (``ray.init`` would keep trying for minutes)."""
    import socket

    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"Ray address {address!r} is not 'local', 'auto', HOST:PORT or "
                         f"ray://HOST:PORT.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise InputError(f"No Ray cluster answered at {address!r} ({err.strerror or err}); "
                         f"start one with `ray start --head`, or use a local instance "
                         f"(address 'local').") from None


def executor_from_address(address: str | None, *, num_cpus: int | None = None
                          ) -> LocalExecutor | ProcessExecutor | RayExecutor:
    """The executor a ``--ray ADDRESS`` option asks for.

    Args:
        address: None gives a :class:`LocalExecutor`; ``"processes"`` a
            :class:`ProcessExecutor` with a worker per CPU, ``"processes:N"`` one with ``N``
            workers; ``"local"`` a :class:`RayExecutor` on a local instance; anything else a
            :class:`RayExecutor` joining that cluster.
        num_cpus: The CPUs of a local Ray instance (None: this machine's).

    Returns:
        The executor (not started).

    Raises:
        InputError: If ``"processes:N"`` has no whole number N >= 1.
    """
    if address is None:
        return LocalExecutor()
    if address == "processes" or address.startswith("processes:"):
        count = address.partition(":")[2]
        if address != "processes" and not (count.isdigit() and int(count) >= 1):
            raise InputError(f"Executor address {address!r} is not 'processes' or "
                             f"'processes:N' with N a whole number >= 1 (worker processes).")
        return ProcessExecutor(int(count) if count else None)
    if address == "local":
        return RayExecutor("local", num_cpus=num_cpus or os.cpu_count() or 1)
    return RayExecutor(address)


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """How one command of :func:`run_commands` ended.

    Attributes:
        command: The command line, as run.
        returncode: Its exit status (0: success; negative: killed by that signal).
        seconds: Wall-clock seconds it ran.
        stdout: What it wrote to stdout ("" when it went to a log file).
        stderr: What it wrote to stderr ("" when it went to a log file).
    """

    command: tuple[str, ...]
    returncode: int
    seconds: float
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.returncode == 0


def run_commands(commands: Sequence[Sequence[str]], jobs: int = 1, *,
                 threads: int | None = None, cwd: str | os.PathLike | None = None,
                 logs: Sequence[str | os.PathLike] | None = None,
                 on_start: Callable[[int], None] | None = None
                 ) -> Iterator[tuple[int, CommandResult]]:
    """Runs commands as child processes, ``jobs`` at a time; yields how each ended.

    A command that fails does not stop the others: its result says so (``ok`` is False), and
    the caller decides. When the caller stops iterating, commands not yet started are not
    started; those running are waited for.

    Args:
        commands: Command lines (lists of strings, no shell).
        jobs: Commands running at once, >= 1.
        threads: TensorFlow intra-op and OpenMP threads of each child (:func:`thread_env`);
            None: the environment as it is.
        cwd: The children's working directory (None: this process's).
        logs: One file per command that its stdout and stderr are appended to (created, with
            its folder, if missing); None: both are captured into the result.
        on_start: Called with a command's index just before it starts (from the thread that
            waits for it).

    Yields:
        ``(i, CommandResult)`` for ``commands[i]``, as each command ends.

    Raises:
        InputError: If ``jobs`` or ``threads`` is not an int >= 1, or ``logs`` does not have
            one file per command.
    """
    import concurrent.futures

    lines = [tuple(str(part) for part in command) for command in commands]
    _check_count("jobs", jobs, allow_none=False)
    _check_count("threads", threads)
    if logs is not None and len(logs) != len(lines):
        raise InputError(f"Invalid value for argument `logs`: expected one file per command "
                         f"({len(lines)}). Received: {len(logs)} files")
    env = None if threads is None else {**os.environ, **thread_env(threads)}

    def run(i: int) -> CommandResult:
        if on_start is not None:
            on_start(i)
        started = time.perf_counter()
        if logs is None:
            captured = subprocess.run(lines[i], cwd=cwd, env=env, capture_output=True,
                                      text=True)
            returncode, out, err = captured.returncode, captured.stdout, captured.stderr
        else:
            Path(logs[i]).parent.mkdir(parents=True, exist_ok=True)
            with open(logs[i], "a") as log:
                returncode = subprocess.run(lines[i], cwd=cwd, env=env, stdout=log,
                                            stderr=log).returncode
            out = err = ""
        return CommandResult(lines[i], returncode, time.perf_counter() - started, out, err)

    pool = concurrent.futures.ThreadPoolExecutor(jobs)
    try:
        pending = {pool.submit(run, i): i for i in range(len(lines))}
        for future in concurrent.futures.as_completed(pending):
            yield pending[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
