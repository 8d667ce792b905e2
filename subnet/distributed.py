"""Executors: where subnet's independent pieces of work run, one process or a Ray cluster.

Two kinds of subnet's work split into independent tasks whose results do not depend on where or
in which order they run: a record's chunks of masks (mask i is a pure function of (seed, i);
:func:`subnet.record_masks` with ``executor=``) and a comparison's cells (each with its own
seed). An executor runs such tasks and hands their results back as they finish; the caller (the
*driver*) writes every result itself, so the output is the one a single process makes, byte for
byte, and a driver that is interrupted resumes from what it wrote.

- :class:`LocalExecutor` runs the tasks one after another in this process (the default).
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
process's (:func:`subnet._tf.intra_op_threads`), so that a task computes what this process
would, to the last bit, on the same kind of machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from subnet.errors import InputError

__all__ = ["LocalExecutor", "RayExecutor", "executor_from_address"]


class LocalExecutor:
    """Runs tasks in this process, in the order given: the reference a distributed run equals."""

    name = "local"

    @property
    def threads(self) -> int:
        """TensorFlow's intra-op thread count the tasks compute with: this process's."""
        from subnet._tf import intra_op_threads

        return intra_op_threads()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def put(self, value: Any) -> Any:
        """The value itself (there is no object store to place it in)."""
        return value

    def map_unordered(self, fn: Callable, calls: Iterable[tuple]) -> Iterator[tuple[int, Any]]:
        """Yields ``(i, fn(*calls[i]))`` for each call, as each finishes (here: in order)."""
        for i, args in enumerate(calls):
            yield i, fn(*args)


class RayExecutor:
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
        if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int)
                                     or num_cpus < 1):
            raise InputError(f"Invalid value for argument `num_cpus`: expected None or an int "
                             f">= 1. Received: num_cpus={num_cpus!r}")
        if num_cpus is not None and address != "local":
            raise InputError(f"`num_cpus` sizes a local Ray instance; a cluster at "
                             f"{address!r} has its own. Leave num_cpus=None.")
        if isinstance(cpus_per_task, bool) or not isinstance(cpus_per_task, (int, float)) or \
                not cpus_per_task > 0:
            raise InputError(f"Invalid value for argument `cpus_per_task`: expected a number "
                             f"> 0. Received: cpus_per_task={cpus_per_task!r}")
        if isinstance(gpus_per_task, bool) or not isinstance(gpus_per_task, (int, float)) or \
                not gpus_per_task >= 0:
            raise InputError(f"Invalid value for argument `gpus_per_task`: expected a number "
                             f">= 0. Received: gpus_per_task={gpus_per_task!r}")
        if threads_per_task is not None and (isinstance(threads_per_task, bool) or
                                             not isinstance(threads_per_task, int) or
                                             threads_per_task < 1):
            raise InputError(f"Invalid value for argument `threads_per_task`: expected None or "
                             f"an int >= 1. Received: threads_per_task={threads_per_task!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InputError(f"Invalid value for argument `max_retries`: expected an int >= 0. "
                             f"Received: max_retries={max_retries!r}")
        self.address, self.num_cpus = address, num_cpus
        self.cpus_per_task, self.threads_per_task = cpus_per_task, threads_per_task
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        self._ray = None
        self._owned = False

    @property
    def threads(self) -> int:
        """TensorFlow's intra-op thread count the tasks compute with: ``threads_per_task``, or
        this process's when it is None."""
        if self.threads_per_task is not None:
            return self.threads_per_task
        from subnet._tf import intra_op_threads

        return intra_op_threads()

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

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
                ray.init(address=None if local else self.address,
                         num_cpus=self.num_cpus if local else None, include_dashboard=False,
                         logging_level="warning", log_to_driver=False,
                         **({"_system_config": {"worker_niceness": 0}} if local else {}))
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

    def _started(self):
        if self._ray is None:
            self.start()
        return self._ray

    def put(self, value: Any) -> Any:
        """Places ``value`` in Ray's object store once; tasks given the reference get the value."""
        return self._started().put(value)

    def map_unordered(self, fn: Callable, calls: Iterable[tuple]) -> Iterator[tuple[int, Any]]:
        """Runs ``fn(*args)`` for each ``args`` of ``calls`` as a Ray task; yields ``(i, result)``
        as each finishes. Tasks not yet finished when the caller stops iterating (or one task
        raises) are cancelled.

        ``fn`` must be importable by the workers (a module-level function of an installed
        package) or picklable by value (a function defined in a test or a notebook).
        """
        ray = self._started()
        threads = str(self.threads)
        remote = ray.remote(fn).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
            max_retries=self.max_retries, retry_exceptions=False,
            runtime_env={"env_vars": {"TF_NUM_INTRAOP_THREADS": threads,
                                      "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": threads,
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


def executor_from_address(address: str | None, *, num_cpus: int | None = None):
    """The executor a ``--ray ADDRESS`` option asks for: None gives a :class:`LocalExecutor`,
    ``"local"`` a :class:`RayExecutor` on a local instance (``num_cpus``: its CPUs, default
    this machine's), anything else a :class:`RayExecutor` joining that cluster."""
    if address is None:
        return LocalExecutor()
    if address == "local":
        return RayExecutor("local", num_cpus=num_cpus or os.cpu_count() or 1)
    return RayExecutor(address)
