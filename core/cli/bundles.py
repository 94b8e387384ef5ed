"""`atlas import-bundle PATH`: import a shared session bundle (core/bundles.py does the work)."""

from __future__ import annotations

import argparse


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-bundle",
        help="import a session bundle (.zip): check it, restore its artifacts, save its session",
        description="Checks the bundle (safe unzip with size caps on inflated bytes, checksums, JSON schema, "
                    "no pickle), restores its artifacts into their own read-only namespace of the artifact "
                    "store (never over this machine's results) and saves the session in the SQLite store; "
                    "prints ?session=<id>.",
    )
    p.add_argument("path", help="the bundle zip")
    p.add_argument("--sessions", default=None, help="SQLite file (default: $ATLAS_HOME/sessions.sqlite)")
    p.add_argument("--store", default=None, help="artifact store (default: $ATLAS_CACHE_DIR or ~/.cache/atlas)")
    p.set_defaults(func=_cmd_import_bundle)


def _cmd_import_bundle(args: argparse.Namespace) -> int:
    from core.bundles import run_import

    session_id = run_import(args.path, args.sessions or None, args.store or None)
    print(f"Imported session {session_id}; open it with ?session={session_id}")
    return 0
