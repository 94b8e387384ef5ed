"""The jobs of a distributed harvest and the scheduler that runs them on the workers (core.harvest.ray_pool).

A harvest is a balanced binary tree over the shards in corpus order: a leaf harvests one shard, an
inner node merges its two children (left, then right: the L1 snapshots are appended in corpus order).
Checkpoint harvests are independent jobs. Idle workers take merges first (they free the object store),
then shards in corpus order. A job whose worker died runs again on a live worker while a replacement
starts; a merge whose inputs were lost (their node died) runs its subtree again; a job that fails more
than `max_retries` times, or raises an AtlasError (bad input: retrying cannot help), ends the run with
a ShardFailedError naming it. Nothing is written by the workers: the driver saves a complete result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.harvest.ray_pool import (
    PROGRESS_EVERY_S,
    ProgressTracker,
    ShardFailedError,
    Workers,
    failure_kind,
    short_reason,
)


@dataclass(eq=False)
class Job:
    """A unit of work for a worker. `submit(worker)` -> (value ref, info ref); the scheduler calls
    `complete(value ref)` when it succeeded and `inputs_lost()` when its inputs are gone."""

    label: str
    attempts: int = 0
    done: bool = False
    running: bool = False
    value: Any = None

    def runnable(self) -> bool:
        return not self.done and not self.running

    def order(self) -> tuple:
        return (0,)

    def submit(self, worker: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def complete(self, value: Any) -> None:
        self.done, self.value = True, value

    def inputs_lost(self) -> None:
        return None


def run_jobs(ray: Any, jobs: Sequence[Job], workers: Workers, *, max_retries: int, finished: Callable[[], bool],
             tick: Callable[[], None] | None = None, say: Callable[[str], None] | None = None) -> None:
    """Run `jobs` on `workers` until finished(): retries, replacements and failures as in the module
    docstring; tick() after every wait (progress)."""
    say = say or (lambda _message: None)
    in_flight: dict[Any, tuple[Job, Any, Any]] = {}  # info ref -> (job, worker, value ref)
    while not finished():
        for job in sorted((j for j in jobs if j.runnable()), key=lambda j: j.order()):
            worker = workers.take()
            if worker is None:
                break
            job.running, job.attempts = True, job.attempts + 1
            value_ref, info_ref = job.submit(worker)
            in_flight[info_ref] = (job, worker, value_ref)
        waiting = list(in_flight) + list(workers.starting)
        if not waiting:
            raise ShardFailedError("The distributed harvest has jobs left but no worker to run them.")
        ready, _ = ray.wait(waiting, num_returns=1, timeout=PROGRESS_EVERY_S)
        for ref in ready:
            if ref in workers.starting:
                workers.started(ref)
                continue
            job, worker, value_ref = in_flight.pop(ref)
            job.running = False
            try:
                ray.get(ref)
            except Exception as error:  # noqa: BLE001 - classified below; the run fails or retries
                kind, reason = failure_kind(ray, error), short_reason(error)
                if kind == "worker":
                    workers.replace(worker)
                else:
                    workers.give_back(worker)
                if kind == "input":
                    raise ShardFailedError(f"The distributed harvest failed at {job.label}: {reason} "
                                           "Nothing was written.") from error
                if job.attempts > max_retries:
                    raise ShardFailedError(
                        f"The distributed harvest failed at {job.label} after {job.attempts} attempts "
                        f"(last: {reason}). Nothing was written; fix the cause and run it again.") from error
                if kind == "lost":
                    job.inputs_lost()
                what = "on another worker" if kind == "worker" else "again"
                say(f"retrying {job.label} {what} (attempt {job.attempts + 1} of {max_retries + 1}): {reason}")
                continue
            workers.give_back(worker)
            job.complete(value_ref)
        if tick is not None:
            tick()


# ---------------------------------------------------------------------------------------------
# the harvest: shards and merges in a tree
# ---------------------------------------------------------------------------------------------
@dataclass
class TreeRun:
    """What every job of one distributed harvest shares."""

    ray: Any
    shards: Sequence[Any]
    tokens: torch.Tensor
    settings: Any
    loader: Callable
    tracker: Any
    token_offsets: Sequence[int]  # kept tokens before each shard
    first_rows: int = 0  # rows the first shard reads at least (its splice-in evaluation block)
    sites: Sequence[str] | None = None


@dataclass(eq=False)
class Node(Job):
    """Shards [lo, hi) of the plan: a leaf harvests one shard, an inner node merges its children."""

    run: TreeRun | None = None
    lo: int = 0
    hi: int = 1
    left: "Node | None" = None
    right: "Node | None" = None
    rows: Any = None  # ObjectRef of a leaf's tokens, until it is done

    @property
    def leaf(self) -> bool:
        return self.left is None

    @property
    def children(self) -> tuple[Node, Node]:
        """(left, right) of an inner node."""
        if self.left is None or self.right is None:
            raise RuntimeError(f"Shards [{self.lo}, {self.hi}) form a leaf, which has no children.")
        return self.left, self.right

    def runnable(self) -> bool:
        return super().runnable() and (self.leaf or all(child.done for child in self.children))

    def order(self) -> tuple:
        return (self.leaf, self.lo)  # merges first, then shards in corpus order

    def submit(self, worker: Any) -> tuple[Any, Any]:
        run = self.run
        if run is None:
            raise RuntimeError("A Node is built with its TreeRun (build_tree).")
        if not self.leaf:
            left, right = self.children
            return worker.merge.options(num_returns=2).remote(left.value, right.value)
        shard = run.shards[self.lo]
        if self.rows is None:
            end = max(shard.stop, run.first_rows) if shard.start == 0 else shard.stop
            self.rows = run.ray.put(run.tokens[shard.start:end].numpy().astype(np.int32))
        return worker.harvest.options(num_returns=2).remote(
            run.loader, self.lo, shard.start, shard.stop, self.rows, int(run.tokens.shape[0]),
            run.token_offsets[self.lo], run.settings, run.tracker, run.sites)

    def complete(self, value: Any) -> None:
        super().complete(value)
        self.rows = None
        if not self.leaf:  # the children's states are merged in: let the object store free them
            left, right = self.children
            left.value = right.value = None

    def inputs_lost(self) -> None:
        if self.leaf:  # its tokens: put them again
            self.rows = None
            return
        for child in self.children:
            for node in child.subtree():
                node.done, node.running, node.value = False, False, None

    def subtree(self) -> list["Node"]:
        """This subtree, children before parents."""
        if self.leaf:
            return [self]
        left, right = self.children
        return left.subtree() + right.subtree() + [self]


def build_tree(run: TreeRun, lo: int, hi: int) -> Node:
    n = len(run.shards)
    if hi - lo == 1:
        shard = run.shards[lo]
        return Node(f"shard {lo + 1} of {n} (corpus sequences {shard.start}-{shard.stop - 1})", run=run, lo=lo, hi=hi)
    mid = (lo + hi) // 2
    return Node(f"the merge of shards {lo + 1}-{hi} of {n}", run=run, lo=lo, hi=hi,
                left=build_tree(run, lo, mid), right=build_tree(run, mid, hi))


def harvest_tree(ray: Any, shards: Sequence[Any], tokens: torch.Tensor, settings: Any, loader: Callable, *,
                 token_offsets: Sequence[int], n_workers: int, gpus_per_worker: int, max_retries: int,
                 first_rows: int = 0, sites: Sequence[str] | None = None, keep_workers: bool = False,
                 progress: Callable[[int, int, float], None] | None = None,
                 say: Callable[[str], None] | None = None) -> Any:
    """Harvest every shard on `n_workers` actors and merge the states in a tree; the root's HarvestState."""
    tracker = ray.remote(ProgressTracker).options(num_cpus=0).remote()
    workers = Workers(ray, n_workers, gpus_per_worker, keep_workers, max_failures=max_retries + n_workers)
    run = TreeRun(ray, shards, tokens, settings, loader, tracker, token_offsets, first_rows, sites)
    root = build_tree(run, 0, len(shards))
    total = sum(s.stop - s.start for s in shards) * int(tokens.shape[1])
    began, polled = time.perf_counter(), [0.0]

    def tick() -> None:
        now = time.perf_counter()
        if progress is None or (now - polled[0] < PROGRESS_EVERY_S and not root.done):
            return
        polled[0] = now
        done = total if root.done else min(total, ray.get(tracker.total.remote()))
        if done:
            progress(done, total, (now - began) / done * (total - done))

    try:
        run_jobs(ray, root.subtree(), workers, max_retries=max_retries, finished=lambda: root.done, tick=tick, say=say)
        return ray.get(root.value)
    finally:
        workers.close()
        ray.kill(tracker, no_restart=True)


# ---------------------------------------------------------------------------------------------
# checkpoints: one job each
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class CheckpointJob(Job):
    spec: Any = None
    name: str = ""
    max_tokens: int = 0
    corpus: Any = None

    def submit(self, worker: Any) -> tuple[Any, Any]:
        return worker.checkpoint.options(num_returns=2).remote(self.spec, self.name, self.max_tokens, self.corpus)


def harvest_checkpoint_jobs(ray: Any, spec: Any, names: Sequence[str], max_tokens: int, corpus: Any, *,
                            n_workers: int, gpus_per_worker: int, max_retries: int, keep_workers: bool = False,
                            progress: Callable[[int, int], None] | None = None,
                            say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """{checkpoint: (HarvestResult, key)}: each checkpoint's harvest as a job on `n_workers` actors."""
    jobs = [CheckpointJob(f"checkpoint {name!r}", spec=spec, name=name, max_tokens=int(max_tokens), corpus=corpus)
            for name in names]
    workers = Workers(ray, n_workers, gpus_per_worker, keep_workers, max_failures=max_retries + n_workers)
    reported = [0]

    def tick() -> None:
        done = sum(j.done for j in jobs)
        if progress is not None and done != reported[0]:
            reported[0] = done
            progress(done, len(jobs))

    try:
        run_jobs(ray, jobs, workers, max_retries=max_retries, finished=lambda: all(j.done for j in jobs), tick=tick,
                 say=say)
        return {job.name: ray.get(job.value) for job in jobs}
    finally:
        workers.close()
