"""Hugging Face Hub access, offline first.

The hub client reads HF_HUB_OFFLINE once, at import time. With it set, a file that is not in the
local cache fails at once; without it and without a network, the client retries for minutes. So
every source that needs the hub asks here first: is the hub usable, and if not, is what we need
already in the cache? When it is not, the user gets an OfflineError that names the missing repo
and file and says how to get it, within a fraction of a second.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from core.errors import OfflineError

HUB_HOST = "huggingface.co"


def hub_offline_flag() -> bool:
    """True when offline mode was asked for (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE).

    Reads huggingface_hub's constant when the client is importable (it is what the client obeys),
    the environment otherwise.
    """
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
        return value.strip().lower() in {"1", "on", "yes", "true"}


@lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 2.0) -> bool:
    """One TCP connect to the hub, cached for the process: no network means no retries later."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def hub_usable() -> bool:
    """The hub may be asked: offline mode is off and the host answers."""
    return not hub_offline_flag() and hub_reachable()


def cached_file(repo_id: str, filename: str, revision: str | None = None, repo_type: str = "model") -> str | None:
    """Path of `filename` of `repo_id` in the local hub cache, or None when it is not there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type)
    return found if isinstance(found, str) else None


def how_to_get(repo_id: str, revision: str | None = None, repo_type: str = "model") -> str:
    """The instruction shown to a user who lacks a hub file."""
    rev = f" --revision {revision}" if revision else ""
    kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
    return (
        f"On a machine with a network, run `hf download {repo_id}{rev}{kind}` "
        "(or start Atlas there once with HF_HUB_OFFLINE=0), then copy the Hugging Face cache "
        "(~/.cache/huggingface/hub, or $HF_HUB_CACHE) to this machine."
    )


def require_cached(
    repo_id: str,
    filenames: list[str],
    what: str,
    revision: str | None = None,
    repo_type: str = "model",
) -> None:
    """Raise OfflineError when the hub cannot be used and any of `filenames` is not cached.

    With a usable hub this does nothing: the hub client downloads what is missing.
    """
    if hub_usable():
        return
    missing = [f for f in filenames if cached_file(repo_id, f, revision=revision, repo_type=repo_type) is None]
    if missing:
        raise OfflineError(offline_message(what, repo_id, missing, revision, repo_type))


def offline_message(
    what: str, repo_id: str, missing: list[str], revision: str | None = None, repo_type: str = "model"
) -> str:
    reason = "offline mode is on (HF_HUB_OFFLINE=1)" if hub_offline_flag() else f"{HUB_HOST} cannot be reached"
    at = f" at revision {revision}" if revision else ""
    return (
        f"{what} needs {', '.join(missing)} from the Hugging Face repo {repo_id!r}{at}, which is not in the "
        f"local cache, and {reason}. {how_to_get(repo_id, revision, repo_type)}"
    )


def is_offline_failure(error: BaseException) -> bool:
    """Whether an exception from the hub / transformers stack means "needed the network, had none"."""
    names = {type(e).__name__ for e in _chain(error)}
    if names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError", "ConnectTimeout"}:
        return True
    text = " ".join(str(e) for e in _chain(error)).lower()
    return any(
        marker in text
        for marker in (
            "offline mode",
            "hf_hub_offline",
            "couldn't connect",
            "cannot find the requested files in the local cache",
            "we couldn't connect",
            "outgoing traffic has been disabled",
        )
    )


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
