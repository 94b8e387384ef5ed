"""`python -m core <command>`: the same commands as `atlas <command>` (core/cli)."""

import sys

from core.cli import main

if __name__ == "__main__":
    sys.exit(main())
