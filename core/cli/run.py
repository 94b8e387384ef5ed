"""`atlas run`: start the dashboard on the embedded organism (what `make run` does).

Streamlit runs in a child process: the library never imports the UI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app" / "main.py"


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="start the dashboard (Streamlit) on http://localhost:8501",
                              description="Starts `streamlit run app/main.py`; extra arguments go to Streamlit "
                                          "(e.g. `atlas run -- --server.address 0.0.0.0`).")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, help="passed to `streamlit run`")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    extra = [a for a in args.streamlit_args if a != "--"]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    return subprocess.call([sys.executable, "-m", "streamlit", "run", str(APP), *extra], env=env)
