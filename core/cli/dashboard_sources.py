"""What a session written by `atlas analyze` tells the dashboard about its sources, so that opening its
bundle (Sessions page, or `atlas import-bundle`) shows the same model, SAEs and corpus, not the organism.

The dashboard restores its sidebar from a session's settings (`ui_<key>` for the source keys of
app/registry.py, `harvest_tokens` as is) and accepts only what its own sidebar could have chosen: a local
directory it has loaded before (core.known_dirs) and a corpus file in its upload folder (core.uploads). So
the command remembers the directories it loaded, as the sidebar does when a path is typed there, and keeps
a file corpus as an upload. A file over the upload limit is not copied: the dashboard then asks for it.

    settings.update(dashboard_settings(model_spec, sae_specs, corpus_spec, n_tokens, say=say))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HARVEST_TOKENS = (1_000, 10_000_000)   # = app.registry.HARVEST_TOKENS (the sidebar's range; a test checks)


def dashboard_settings(model_spec: Any, sae_specs: Sequence[Any], corpus_spec: Any, n_tokens: int, *,
                       say: Callable[..., None] = lambda *a: None) -> dict[str, Any]:
    """The session settings that choose these sources in the dashboard's sidebar (see the module docstring)."""
    from core.known_dirs import KnownDirectories

    known = KnownDirectories()
    values: dict[str, Any] = {"ui_model_source": model_spec.source}
    if model_spec.source == "organism":
        values["ui_checkpoint"] = model_spec.checkpoint or "final"
    elif model_spec.source == "hf_dir":
        values["ui_hf_dir"] = str(Path(model_spec.path).resolve())
        known.remember("model", values["ui_hf_dir"])
    else:
        values["ui_tl_name"] = model_spec.name
        values["ui_tl_checkpoint"] = "" if model_spec.checkpoint is None else str(model_spec.checkpoint)
    refs = []
    for spec in sae_specs:
        if spec.source == "organism":
            refs.append(f"org:{spec.hook_name}")
        elif spec.source == "release":
            refs.append(f"rel:{spec.release}/{spec.sae_id}")
        else:
            refs.append(f"dir:{known.remember('sae', spec.path)}")
    values["ui_sae_set"] = sorted(refs)
    values.update(_corpus_values(corpus_spec, say))
    values["harvest_tokens"] = max(HARVEST_TOKENS[0], min(HARVEST_TOKENS[1], int(n_tokens)))
    return values


def _corpus_values(spec: Any, say: Callable[..., None]) -> dict[str, Any]:
    from core.uploads import MAX_UPLOAD_BYTES, UploadError, save_upload

    if spec.source == "world":
        return {"ui_corpus_source": "world"}
    column = spec.column or "text"
    if spec.source == "hf_dataset":
        return {"ui_corpus_source": "hf_dataset", "ui_hf_dataset": spec.name, "ui_hf_split": spec.split,
                "ui_corpus_column": column}
    try:
        if Path(spec.path).stat().st_size > MAX_UPLOAD_BYTES:   # not read whole only to be refused
            raise UploadError(f"{Path(spec.path).name} is over the dashboard's upload limit")
        name = save_upload(Path(spec.path).read_bytes(), Path(spec.path).name)
    except (UploadError, OSError) as error:
        say(f"note: the dashboard will ask for the corpus file when it opens this session ({error})")
        name = ""
    return {"ui_corpus_source": "file", "ui_corpus_file": name, "ui_corpus_column": column}
