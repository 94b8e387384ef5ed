"""`python -m bench [NAME] [options]`: run the benchmarks (names: the keys of BENCHMARKS below).

With no name, every benchmark runs with its defaults; with a name, that one runs and the remaining
arguments are its own (`python -m bench harvest --help`). Each prints ratios measured side by side
in the same process; docs/PERFORMANCE.md records the results.
"""

from __future__ import annotations

import sys

from bench import (
    bench_bundle,
    bench_corpus,
    bench_feature_map,
    bench_feature_pages,
    bench_harvest,
    bench_pages,
    bench_probe,
    bench_ray,
    bench_scale,
    bench_steer,
    bench_store,
    saedashboard,
)

BENCHMARKS = {
    "harvest": bench_harvest.main,
    "probe": bench_probe.main,
    "feature_map": bench_feature_map.main,
    "feature_pages": bench_feature_pages.main,
    "saedashboard": saedashboard.main,
    "ray": bench_ray.main,  # needs requirements-ray.txt
    "steer": bench_steer.main,
    "store": bench_store.main,
    "corpus": bench_corpus.main,
    "scale": bench_scale.main,  # random GPT-2 / Gemma-shaped models end to end (docs/PERFORMANCE.md)
    "pages": bench_pages.main,  # every page in Chromium on a stored GPT-2-scale session (docs/PERFORMANCE.md)
    "bundle": bench_bundle.main,  # needs --store: a stored harvest at scale (e.g. bench pages' --keep)
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv and argv[0] in BENCHMARKS:
        return BENCHMARKS[argv[0]](argv[1:]) or 0
    if argv:
        print(f"unknown benchmark {argv[0]!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name, run in BENCHMARKS.items():
        print(f"== {name} ==", flush=True)
        status |= run([]) or 0
    return status


if __name__ == "__main__":
    sys.exit(main())
