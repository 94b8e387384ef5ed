"""The harvest on a Ray cluster: the same HarvestResult (and store artifact) as a local run, sharded.

    cluster = RayCluster("ray://head:10001")          # or RayCluster() for a local cluster
    result, key = harvest_cached_on(cluster, model, saes, corpus, settings, store, progress)

The corpus sequences are split into contiguous shards whose boundaries fall on batch boundaries (so
every forward pass sees the same batch as in a local run); each worker (a Ray actor, one GPU each
where the cluster has GPUs, else one CPU) loads the model and SAEs once and harvests shards with
core.harvest.run.harvest_shard; the shard states are merged in a tree (HarvestState.merge, corpus
order kept) and finalized on the driver. The sampling keys hash each token's corpus place
(core.harvest.sampling), so counts, histograms, maxima, top-k and quantile contexts, reservoirs and
co-occurrence merge exactly; moments and sums to float tolerance. A worker that dies is replaced and
its shard run again; a shard that fails for good raises ShardFailedError naming it, before anything
is written. Checkpoint harvests (spectra over training) run as one Ray task per checkpoint.

`ray` is optional (requirements-ray.txt) and imported only inside the functions that use it.
docs/SCALING.md: the cluster recipe, what each worker holds, what scales with what, the cost model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from core.errors import AtlasError
from core.harvest.ray_pool import RayUnavailableError, ShardFailedError, release_workers
from core.harvest.result import HarvestResult, finalize
from core.harvest.run import ProgressFn, describe_sources, harvest_cached, kept_tokens, n_sequences_for
from core.harvest.settings import HarvestSettings

RAY_ADDRESS_ENV = "ATLAS_RAY_ADDRESS"  # "local" (a cluster on this machine), "auto", "host:6379", "ray://host:10001"
LOCAL = "local"

__all__ = ["LOCAL", "RAY_ADDRESS_ENV", "RayCluster", "RayUnavailableError", "Shard", "ShardFailedError",
           "SpecLoader", "cluster_from_env", "harvest_cached_on", "harvest_checkpoints_on_ray", "harvest_on_ray",
           "plan_shards", "release_workers", "spec_loader", "state_on_ray"]


@dataclass(frozen=True)
class RayCluster:
    """Where and how to run a distributed harvest.

    address: None (or "local") starts a Ray cluster on this machine; else a running cluster's address
    ("auto", "host:6379", or "ray://host:10001" through the Ray client). workers: actors holding the
    model (None: one per GPU of the cluster, else one per CPU). shards: corpus slices (None: one per
    worker; more give finer retries and load balance, at one more merge each). max_retries: further
    attempts of a shard or merge whose worker died or raised (an AtlasError is not retried).
    keep_workers: keep the workers, with the model they loaded, for the next run of this process
    (notebooks, tests) until release_workers(); by default they end with the run, freeing their GPUs.
    """

    address: str | None = None
    workers: int | None = None
    shards: int | None = None
    max_retries: int = 2
    keep_workers: bool = False

    def __post_init__(self) -> None:
        for name in ("workers", "shards"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AtlasError(f"Ray {name} must be at least 1 (got {value}).")
        if self.max_retries < 0:
            raise AtlasError("Ray max_retries must be >= 0.")

    @property
    def local(self) -> bool:
        return self.address in (None, LOCAL)

    def describe(self) -> str:
        return "a local Ray cluster" if self.local else f"the Ray cluster at {self.address}"


def cluster_from_env(environ: Mapping[str, str] | None = None) -> RayCluster | None:
    """The cluster $ATLAS_RAY_ADDRESS configures ("local" or an address), or None (harvest here)."""
    value = (os.environ if environ is None else environ).get(RAY_ADDRESS_ENV, "").strip()
    if not value:
        return None
    return RayCluster(address=None if value == LOCAL else value)


@dataclass(frozen=True)
class Shard:
    """Corpus sequences [start, stop), the index-th of a plan."""

    index: int
    start: int
    stop: int


def plan_shards(n_sequences: int, batch_size: int, n_shards: int) -> list[Shard]:
    """Up to n_shards contiguous shards of about equal size whose boundaries are multiples of
    batch_size (fewer when there are fewer batches): every batch is the one a local run reads."""
    if n_sequences < 1:
        raise AtlasError("The corpus holds no token sequences to harvest.")
    n_batches = -(-n_sequences // batch_size)
    n = max(1, min(n_shards, n_batches))
    edges = [min(n_sequences, round(i * n_batches / n) * batch_size) for i in range(n + 1)]
    return [Shard(i, edges[i], edges[i + 1]) for i in range(n)]


@dataclass(frozen=True)
class SpecLoader:
    """Loads the model and SAEs on a worker from their specs (paths must exist on every node)."""

    model: Any  # core.sources.models.ModelSpec
    saes: tuple  # core.sources.saes.SAESpec, ...

    def __call__(self) -> tuple[Any, list]:
        from core.sources.models import load_model
        from core.sources.saes import load_sae

        model = load_model(self.model)
        return model, [load_sae(spec, model) for spec in self.saes]


def spec_loader(model: Any, saes: Sequence[Any], gpu: bool) -> SpecLoader:
    """A SpecLoader for these loaded objects: their specs, with the organism directory resolved here
    (so $ATLAS_ORGANISM_DIR need not be set on the workers) and the device "cuda" on a GPU worker (Ray
    gives each actor its own GPU as cuda:0) or as given otherwise."""
    from core.sources.organism import resolve_dir

    spec = getattr(model, "spec", None)
    if spec is None or getattr(model.card, "origin", None) == "in-memory" or any(
            getattr(s, "spec", None) is None or getattr(s, "origin", None) == "in-memory" for s in saes):
        raise AtlasError("A model or SAE built in memory cannot be re-loaded on Ray workers; pass loader= "
                         "(a picklable callable returning (model, saes)) or load them from a name or directory.")
    if spec.source == "organism" and not spec.path:
        spec = replace(spec, path=str(resolve_dir(None)))
    if gpu:
        spec = replace(spec, device="cuda")
    sae_specs = tuple(replace(s.spec, path=str(resolve_dir(None)))
                      if s.spec.source == "organism" and not s.spec.path else s.spec for s in saes)
    return SpecLoader(spec, sae_specs)


def _wants_gpu(spec: Any) -> bool:
    device = str(getattr(spec, "device", "auto"))
    return device == "auto" or device.startswith("cuda")


def state_on_ray(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings, *,
                 cluster: RayCluster | None = None, sites: Sequence[str] | None = None,
                 loader: Callable[[], tuple[Any, list]] | None = None, progress: ProgressFn | None = None,
                 say: Callable[[str], None] | None = None) -> Any:
    """The merged HarvestState of the pass over the whole corpus, run as shards on a Ray cluster (what
    harvest_shard(model, saes, corpus, settings, sites=sites) computes in one process). Arguments as in
    harvest_on_ray; sites: the moment/reservoir sites (default: settings.sites, else every resid_post
    plus the SAE hooks)."""
    from core.harvest import ray_jobs, ray_pool
    from core.harvest.splice import n_eval_sequences

    cluster = cluster or RayCluster()
    tokens = corpus.tokens
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise AtlasError("The corpus holds no token sequences to harvest.")
    n_sequences = n_sequences_for(tokens, settings.max_tokens)
    ray = ray_pool.connect(None if cluster.local else cluster.address)
    gpus = ray_pool.cluster_gpus(ray) if _wants_gpu(getattr(model, "spec", None)) else 0
    n_workers = cluster.workers or gpus or ray_pool.cluster_cpus(ray)
    shards = plan_shards(n_sequences, settings.batch_size, cluster.shards or n_workers)
    available = gpus or ray_pool.cluster_cpus(ray)
    if say is not None and min(n_workers, len(shards)) > available:
        say(f"{min(n_workers, len(shards))} workers asked for, {available} {'GPUs' if gpus else 'CPUs'} in the "
            "cluster: the others wait for resources")
    loader = loader or spec_loader(model, saes, gpu=gpus > 0)
    tokens = tokens.cpu()
    bos = getattr(model, "bos_token_id", None)
    kept = [kept_tokens(tokens[s.start:s.stop], settings, bos) for s in shards]
    offsets = [sum(kept[:i]) for i in range(len(shards))]
    # the first shard also evaluates the splice-in quality on the corpus's first sequences: send it those
    n_eval = n_eval_sequences(settings.splice_tokens, int(tokens.shape[1]), n_sequences) if saes else 0
    return ray_jobs.harvest_tree(ray, shards, tokens, settings, loader, token_offsets=offsets, first_rows=n_eval,
                                 sites=None if sites is None else list(sites), n_workers=min(n_workers, len(shards)),
                                 gpus_per_worker=1 if gpus else 0, max_retries=cluster.max_retries,
                                 keep_workers=cluster.keep_workers, progress=progress, say=say)


def harvest_on_ray(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings | None = None, *,
                   cluster: RayCluster | None = None, loader: Callable[[], tuple[Any, list]] | None = None,
                   progress: ProgressFn | None = None, sources: dict[str, Any] | None = None,
                   say: Callable[[str], None] | None = None) -> HarvestResult:
    """The harvest of core.harvest.run.harvest, run on a Ray cluster; equal to it (module docstring).

    model / saes: the loaded objects on this machine (their specs tell the workers what to load,
    unless `loader` is given: a picklable callable returning (model, saes) on a worker); corpus: its
    tokens are sent to the workers shard by shard; progress(done_tokens, total_tokens, seconds_left)
    over all shards; say(message) hears about retries. Raises ShardFailedError (an AtlasError) naming
    the shard that failed for good, RayUnavailableError without Ray or a reachable cluster.
    """
    settings = settings or HarvestSettings()
    began = time.perf_counter()
    state = state_on_ray(model, saes, corpus, settings, cluster=cluster, loader=loader, progress=progress, say=say)
    if sources is None:
        sources = describe_sources(model, saes, corpus)
    return finalize(state, corpus.tokens, sources=sources, seconds=time.perf_counter() - began)


def harvest_cached_on(cluster: RayCluster | None, model: Any, saes: Sequence[Any], corpus: Any,
                      settings: HarvestSettings | None = None, store: Any = None, progress: ProgressFn | None = None,
                      key: str | None = None, say: Callable[[str], None] | None = None,
                      loader: Callable[[], tuple[Any, list]] | None = None) -> tuple[HarvestResult, str]:
    """harvest_cached, with the pass on `cluster` when one is given (None: here, in this process).

    The same key and the same artifacts either way (per-SAE and per-site components, assembled into the
    harvest; only the missing components are computed); they are saved only once the pass is complete,
    so a failed distributed run leaves nothing in the store. The dashboard calls this with
    cluster_from_env() (app/resources.get_harvest), the CLI with its --ray choice. loader: as in
    harvest_on_ray (for the SAEs of a partial pass it must return those SAEs only).
    """
    if cluster is None:
        return harvest_cached(model, saes, corpus, settings, store, progress, key=key)
    settings = settings or HarvestSettings()

    def on_ray(todo: Sequence[Any], sites: list[str], pass_progress: ProgressFn | None) -> Any:
        return state_on_ray(model, todo, corpus, settings, cluster=cluster, sites=sites, loader=loader,
                            progress=pass_progress, say=say)

    return harvest_cached(model, saes, corpus, settings, store, progress, key=key, run_pass=on_ray)


# ---------------------------------------------------------------------------------------------
# checkpoints: one job each
# ---------------------------------------------------------------------------------------------
def harvest_checkpoints_on_ray(cluster: RayCluster, spec: Any, checkpoints: Sequence[str], max_tokens: int,
                               corpus: Any = None, progress: Callable[[int, int], None] | None = None,
                               say: Callable[[str], None] | None = None) -> dict[str, tuple[HarvestResult, str]]:
    """core.harvest.checkpoints.harvest_checkpoint of each checkpoint, in parallel on the cluster's
    workers (one GPU each where the cluster has GPUs and the spec's device allows): {checkpoint:
    (HarvestResult, key)}, keys equal to a local harvest's. progress(done, total) as checkpoints
    finish. A checkpoint whose worker died is harvested again (cluster.max_retries); one that fails for
    good raises ShardFailedError naming it, and nothing is returned (the caller saves complete results)."""
    from core.harvest import ray_jobs, ray_pool
    from core.sources.organism import resolve_dir

    ray = ray_pool.connect(None if cluster.local else cluster.address)
    if spec.source == "organism" and not spec.path:
        spec = replace(spec, path=str(resolve_dir(None)))
    gpus = ray_pool.cluster_gpus(ray) if _wants_gpu(spec) else 0
    if gpus:
        spec = replace(spec, device="cuda")
    n_workers = min(cluster.workers or gpus or ray_pool.cluster_cpus(ray), len(checkpoints))
    return ray_jobs.harvest_checkpoint_jobs(ray, spec, list(checkpoints), max_tokens, corpus, n_workers=n_workers,
                                            gpus_per_worker=1 if gpus else 0, max_retries=cluster.max_retries,
                                            keep_workers=cluster.keep_workers, progress=progress, say=say)
