"""The Ray side of a distributed harvest: connecting, the worker actors and their pool, what travels.

Everything here runs only when a harvest asks for Ray (core.harvest.distributed); `ray` is imported
inside the functions, so core imports without it. The worker and progress classes are plain classes
made into Ray actors at run time (`ray.remote(HarvestWorker)`).

A worker (one actor per GPU, or per CPU) loads the model and SAEs with its first job's loader and
keeps them for every later job with an equal loader (shards, merges), so a model is loaded once per
worker, not per shard. A worker sends back its statistics with every tensor on the CPU
(`portable`). The jobs and their scheduler are in core.harvest.ray_jobs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.errors import AtlasError

PROGRESS_EVERY_S = 0.25  # how often a worker reports its tokens and the driver polls them


class RayUnavailableError(AtlasError):
    """Ray is asked for but not installed, or the cluster cannot be reached."""


class ShardFailedError(AtlasError):
    """A shard (or a merge, or a checkpoint) of a distributed harvest failed for good."""


def require_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise RayUnavailableError(
            "Ray is not installed: `pip install -r requirements-ray.txt` (README, 'More'), or run without --ray."
        ) from error
    return ray


def connect(address: str | None) -> Any:
    """The ray module, connected: to the running cluster at `address` ("auto", "host:6379",
    "ray://host:10001"), or to a new local cluster when None. Reuses a connection already made in
    this process (the tests start one per module; the dashboard keeps one).

    The workers run this driver's Atlas code: a local cluster's workers get this checkout first on
    their PYTHONPATH; a remote cluster receives the `core` package through Ray's runtime_env
    (py_modules, about 1 MB, cached by content), so every node needs Atlas's requirements, not Atlas."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    package = Path(__file__).resolve().parents[1]
    try:
        if address is None:
            path = os.pathsep.join(p for p in (str(package.parent), os.environ.get("PYTHONPATH", "")) if p)
            ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        else:
            ray.init(address=address, log_to_driver=False, runtime_env={"py_modules": [str(package)]})
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = "a local Ray cluster" if address is None else f"the Ray cluster at {address!r}"
        raise RayUnavailableError(f"Could not start or reach {where}: {error}") from error
    return ray


def cluster_gpus(ray: Any) -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# ---------------------------------------------------------------------------------------------
# what travels: shard tokens in, portable states out
# ---------------------------------------------------------------------------------------------
class ShardTokens:
    """Rows [offset, offset + len(rows)) of a corpus of `n_total` rows, indexed like the whole
    corpus: harvest_shard reads rows by their corpus index (the sampling keys hash it), but a worker
    is only sent its own rows."""

    ndim = 2

    def __init__(self, rows: torch.Tensor, offset: int, n_total: int):
        self.rows, self.offset, self.n_total = rows, offset, n_total
        self.shape = torch.Size((n_total, int(rows.shape[1])))
        self.dtype, self.device = rows.dtype, rows.device

    def __len__(self) -> int:
        return self.n_total

    def __getitem__(self, key: Any) -> torch.Tensor:
        end = self.offset + self.rows.shape[0]
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop = key.start or 0, self.n_total if key.stop is None else key.stop
            if start < self.offset or stop > end:
                raise IndexError(f"rows {start}-{stop} lie outside this shard's rows {self.offset}-{end}")
            return self.rows[start - self.offset: stop - self.offset]
        rows = torch.as_tensor(key, dtype=torch.int64)  # a list of rows (the splice-in evaluation block)
        if rows.ndim != 1 or (rows.numel() and (int(rows.min()) < self.offset or int(rows.max()) >= end)):
            raise IndexError(f"rows {key!r} lie outside this shard's rows {self.offset}-{end}")
        return self.rows[rows - self.offset]


@dataclass
class ShardCorpus:
    """What harvest_shard reads of a corpus (its tokens), for one shard's rows."""

    tokens: ShardTokens
    description: str = "shard"


def portable(value: Any) -> Any:
    """`value` (a HarvestState or any of its statistics) with every tensor on the CPU and the
    per-state decoder copies dropped: what a worker sends back is its statistics only, readable on
    a machine without a GPU. Walks core.harvest objects, lists, tuples and dicts in place."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, tuple):
        return tuple(portable(v) for v in value)
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if type(value).__module__.startswith("core.harvest.") and hasattr(value, "__dict__"):
        for name, item in list(vars(value).items()):
            new = {} if name == "_fast_decoders" else portable(item)
            if new is not item and not (isinstance(new, torch.Tensor) and new.data_ptr() == item.data_ptr()):
                setattr(value, name, new)
    return value


# ---------------------------------------------------------------------------------------------
# actors
# ---------------------------------------------------------------------------------------------
class HarvestWorker:
    """One worker: loads the model and SAEs with the first job's `loader()` -> (model, saes) and keeps
    them for every job with an equal loader; harvests shards, merges states, harvests checkpoints."""

    def __init__(self) -> None:
        self.loader: Any = None
        self.model: Any = None
        self.saes: Sequence[Any] = ()

    def ready(self) -> int:
        return os.getpid()

    def _use(self, loader: Callable[[], tuple[Any, Sequence[Any]]]) -> None:
        if self.loader is None or self.loader != loader:
            self._drop()
            self.model, self.saes = loader()
            self.loader = loader

    def _drop(self) -> None:
        self.loader, self.model, self.saes = None, None, ()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def harvest(self, loader: Callable, index: int, start: int, stop: int, rows: np.ndarray, n_total: int,
                token_offset: int, settings: Any, tracker: Any, sites: Sequence[str] | None) -> tuple[Any, dict]:
        from core.harvest.run import harvest_shard

        began = time.perf_counter()
        tracker.report.remote(index, 0)
        self._use(loader)
        tokens = ShardTokens(torch.from_numpy(np.array(rows, dtype=np.int64)), start, n_total)
        last = [0.0]

        def progress(done: int, total: int, _seconds_left: float) -> None:
            now = time.perf_counter()
            if done == total or now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                tracker.report.remote(index, done)

        state = harvest_shard(self.model, self.saes, ShardCorpus(tokens), settings, start, stop, progress=progress,
                              sites=sites, token_offset=token_offset)
        return portable(state), {"pid": os.getpid(), "seconds": time.perf_counter() - began}

    def merge(self, left: Any, right: Any) -> tuple[Any, dict]:
        began = time.perf_counter()
        return portable(left.merge(right)), {"pid": os.getpid(), "seconds": time.perf_counter() - began}

    def checkpoint(self, spec: Any, name: str, max_tokens: int, corpus: Any) -> tuple[Any, dict]:
        """(HarvestResult, key) of core.harvest.checkpoints.harvest_checkpoint, harvested into a scratch
        store that is removed after (the driver saves the result in its own); the held model is dropped
        first (the checkpoint's weights take its place, and are freed after)."""
        import tempfile

        from core.harvest.checkpoints import harvest_checkpoint
        from core.harvest.result import HarvestResult
        from core.store import ArtifactStore

        began = time.perf_counter()
        self._drop()
        with tempfile.TemporaryDirectory(prefix="atlas-checkpoint-") as scratch:
            result, key = harvest_checkpoint(spec, name, max_tokens, store=ArtifactStore(scratch), corpus=corpus)
            arrays, meta = result.to_arrays()  # read into memory before the scratch store goes
            result = HarvestResult.from_arrays({k: np.array(v) for k, v in arrays.items()}, meta)
        return (result, key), {"pid": os.getpid(), "seconds": time.perf_counter() - began}


class ProgressTracker:
    """Tokens read so far per shard, reported by the workers, read by the driver."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def report(self, index: int, done: int) -> None:
        self.done[index] = done

    def total(self) -> int:
        return sum(self.done.values())


# Workers kept between runs of this process (RayCluster.keep_workers): {"job": job id, gpus: [actors]}
_KEPT: dict[Any, Any] = {}


def release_workers() -> int:
    """End the workers kept between runs (RayCluster(keep_workers=True)); returns how many."""
    handles = [h for key, hs in _KEPT.items() if key != "job" for h in hs]
    _KEPT.clear()
    if handles:
        ray = require_ray()
        if ray.is_initialized():
            for handle in handles:
                ray.kill(handle, no_restart=True)
    return len(handles)


class Workers:
    """The actors of one run: taken from the kept ones, started as needed, replaced when they die."""

    def __init__(self, ray: Any, n: int, gpus: int, keep: bool, max_failures: int):
        self.ray, self.gpus, self.keep, self.max_failures = ray, gpus, keep, max_failures
        self.actor = ray.remote(HarvestWorker).options(num_cpus=1, num_gpus=gpus, max_restarts=0,
                                                       max_task_retries=0)
        job = ray.get_runtime_context().get_job_id()
        if _KEPT.get("job") != job:  # a new connection: handles of an old one are meaningless
            _KEPT.clear()
            _KEPT["job"] = job
        kept = _KEPT.setdefault(gpus, [])
        self.idle = [kept.pop() for _ in range(min(n, len(kept)))]
        self.busy: set = set()
        self.starting: dict[Any, Any] = {}  # ready ref -> actor
        self.failures: list[str] = []
        for _ in range(n - len(self.idle)):
            self.start()

    def start(self) -> None:
        handle = self.actor.remote()
        self.starting[handle.ready.remote()] = handle

    def take(self) -> Any | None:
        if not self.idle:
            return None
        handle = self.idle.pop(0)
        self.busy.add(handle)
        return handle

    def give_back(self, handle: Any) -> None:
        self.busy.discard(handle)
        self.idle.append(handle)

    def replace(self, handle: Any) -> None:
        """A worker died: end it for good and start another in its place."""
        self.busy.discard(handle)
        self.ray.kill(handle, no_restart=True)
        self.start()

    def started(self, ref: Any) -> None:
        handle = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except Exception as error:  # noqa: BLE001 - a worker that cannot start: count, retry, give up
            self.ray.kill(handle, no_restart=True)
            self.failures.append(short_reason(error))
            if len(self.failures) > self.max_failures:
                raise ShardFailedError(f"Ray workers could not start ({len(self.failures)} tries): "
                                       f"{self.failures[-1]}") from error
            self.start()
            return
        self.idle.append(handle)

    def close(self) -> None:
        alive = self.idle + list(self.busy) + list(self.starting.values())
        if self.keep:
            _KEPT.setdefault(self.gpus, []).extend(self.idle + list(self.starting.values()))
            alive = list(self.busy)  # still running a job of a failed run: its state is unknown
        for handle in alive:
            self.ray.kill(handle, no_restart=True)


def failure_kind(ray: Any, error: BaseException) -> str:
    """'input' (an AtlasError: fail now), 'worker' (the worker process or its node died),
    'lost' (an input object is gone) or 'task' (an exception in the harvest code)."""
    exceptions = ray.exceptions
    cause = getattr(error, "cause", None)
    if isinstance(error, AtlasError) or isinstance(cause, AtlasError):
        return "input"
    if isinstance(error, (exceptions.RayActorError, exceptions.WorkerCrashedError)):
        return "worker"
    if isinstance(error, exceptions.ObjectLostError):
        return "lost"
    return "task"


def short_reason(error: BaseException) -> str:
    cause = getattr(error, "cause", None)
    if cause is not None and not isinstance(cause, type(error)):
        return f"{type(cause).__name__}: {cause}"[:400]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:400]
