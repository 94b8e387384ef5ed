"""`python -m core.interventions organism [--dir DIR] [--seed N] [--json FILE]`: the concept
interventions on the model organism (core/interventions/organism.py), printed as the Markdown tables
of docs/INTERVENTIONS.md."""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.interventions", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    organism = sub.add_parser("organism", help="months/weekdays circle rotation and latitude erasure on the organism")
    organism.add_argument("--dir", default=None, help="organism directory (default: $ATLAS_ORGANISM_DIR or assets/organism)")
    organism.add_argument("--seed", type=int, default=0)
    organism.add_argument("--json", default=None, help="also write the typed result as JSON to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from core.interventions.organism import render_markdown, run_organism_interventions
    from core.sources.models import ModelSpec, load_model
    from core.sources.organism import load_ground_truth

    model = load_model(ModelSpec(source="organism", path=args.dir, device="cpu"))
    ground_truth = load_ground_truth(args.dir)

    def progress(done: int, total: int, seconds_left: float) -> None:
        print(f"  stage {done}/{total} (~{seconds_left:.0f} s left)", file=sys.stderr, flush=True)

    result = run_organism_interventions(model, ground_truth, seed=args.seed, progress=progress)
    print(render_markdown(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result.to_dict(), handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
