"""`python -m core.organism train|evaluate|structure|card|verify|prebuild`: regenerate or inspect the embedded organism.

Subcommands are registered in `build_parser`; add one by writing a `_cmd_<name>(args)` function and a
subparser with `set_defaults(func=...)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cmd_train(args: argparse.Namespace) -> int:
    from core.organism.train import config_by_name, run_pipeline

    overrides = {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.weight_decay is not None:
        overrides["weight_decay"] = args.weight_decay
    if args.threads is not None:
        overrides["threads"] = args.threads
    if args.sae_steps is not None:
        overrides["sae_steps"] = args.sae_steps
    config = config_by_name(args.config, seed=args.seed, **overrides)
    manifest = run_pipeline(config, Path(args.out))
    print(json.dumps({k: v for k, v in manifest["metrics"].items() if k != "loss_history"}, indent=2))
    print(f"wrote {len(manifest['files'])} files, {manifest['total_bytes'] / 1e6:.1f} MB, to {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from core.organism.evaluate import corpus_loss, evaluate_facts
    from core.sources.organism import load_ground_truth, load_organism, world_corpus_texts

    model = load_organism(Path(args.dir), checkpoint=args.checkpoint)
    accuracy = evaluate_facts(model, load_ground_truth(Path(args.dir))["eval_facts"])
    loss = corpus_loss(model, world_corpus_texts(Path(args.dir), "eval"))
    print(f"held-out loss (eval documents): {loss:.4f}")
    print(f"{'family':24s} {'held-out':>9s} {'train':>7s}")
    for family, held in accuracy["held_out"].items():
        print(f"{family:24s} {held:9.3f} {accuracy['train'][family]:7.3f}")
    return 0


def _cmd_structure(args: argparse.Namespace) -> int:
    from core.organism.structure import structure_report

    print(json.dumps(structure_report(Path(args.dir), checkpoint=args.checkpoint), indent=2))
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from core.organism.card import metrics_card, structure_card
    from core.organism.structure import structure_report

    print(metrics_card(Path(args.dir)))
    print()
    print(structure_card(structure_report(Path(args.dir), checkpoint=args.checkpoint)))
    return 0


def _cmd_prebuild(args: argparse.Namespace) -> int:
    from core.organism.prebuild import prebuild

    path, views = prebuild(args.out, progress=lambda text: print(text, flush=True))
    print(json.dumps(views.seconds, indent=2))
    print(f"wrote {len(views.keys)} artifacts, {path.stat().st_size / 1e6:.1f} MB, to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from core.sources.organism import resolve_dir

    parser = argparse.ArgumentParser(prog="python -m core.organism", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="regenerate world, tokenizer, model, checkpoints and SAEs")
    train.add_argument("--config", default="default", choices=["default", "tiny"])
    train.add_argument("--out", default=str(resolve_dir()))
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    train.add_argument("--weight-decay", type=float, default=None)
    train.add_argument("--threads", type=int, default=None)
    train.add_argument("--sae-steps", type=int, default=None)
    train.set_defaults(func=_cmd_train)

    for name, func, text in [("evaluate", _cmd_evaluate, "held-out loss and answer accuracy per family"),
                             ("structure", _cmd_structure, "circles, city probe and analogy parallelism per layer"),
                             ("card", _cmd_card, "the ground-truth card (Markdown) for docs/ORGANISM.md")]:
        command = sub.add_parser(name, help=text)
        command.add_argument("--dir", default=str(resolve_dir()))
        command.add_argument("--checkpoint", default="final")
        command.set_defaults(func=func)
    prebuild = sub.add_parser("prebuild", help="compute the default views of the organism and write the snapshot the "
                                               "app seeds its store from (assets/prebuilt/organism.zip)")
    prebuild.add_argument("--out", default=None, help="where to write it (default: the shipped snapshot)")
    prebuild.set_defaults(func=_cmd_prebuild)
    # `verify` owns its options (core/organism/verify.py); main() hands it the rest of the command line.
    sub.add_parser("verify", help="the ground-truth card: every measurement against its expected value "
                                  "(see `python -m core.organism verify --help`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "verify":
        from core.organism.verify import main as verify_main

        return verify_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
