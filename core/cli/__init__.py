"""The command line: `atlas <command>` or `python -m core <command>`.

One module per command, each with `add_command(subparsers)` that builds its subparser and sets
`func=` to a function `(args) -> int`; COMMANDS lists them. An AtlasError ends the command with its
message and exit status 2, never a traceback.

    atlas run                                       # the dashboard
    atlas analyze --model organism --sae organism --corpus world --out runs/organism
    atlas import-bundle bundle.zip
    atlas concepts list | atlas concepts reproduce engels|park|gurnee --model NAME
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.cli import analyze, bundles, concepts, run  # noqa: E402

COMMANDS = [run.add_command, analyze.add_command, bundles.add_command, concepts.add_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atlas", description="Atlas: look inside language models.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.errors import AtlasError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AtlasError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
