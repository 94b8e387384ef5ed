"""`python -m bench`: run every benchmark (each prints its own ratios). Extra arguments go to each one."""

from __future__ import annotations

import sys

from bench import bench_harvest

BENCHMARKS = [bench_harvest.main]


def main(argv: list[str] | None = None) -> int:
    status = 0
    for run in BENCHMARKS:
        status |= run(argv if argv is not None else sys.argv[1:])
    return status


if __name__ == "__main__":
    sys.exit(main())
