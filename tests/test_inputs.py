"""Untrusted values: the domain checks (core.inputs), Atlas's upload folder (core.uploads), the list of local
directories this server has loaded (core.known_dirs), and the chunk length several SAEs share."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from core.errors import AtlasError
from core.inputs import (
    InvalidValue,
    PartlyInvalid,
    check_choice,
    check_int,
    check_list,
    check_text,
    has_lone_surrogate,
    printable,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# ---- core.inputs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, needle", [
    (7, "not text"), ("x" * 11, "longer than 10"), ("a\ud800b", "lone surrogates"), ("a\x00b", "NUL"),
])
def test_check_text_refuses_without_echoing_the_value(value, needle):
    with pytest.raises(InvalidValue, match=needle) as caught:
        check_text(value, max_length=10)
    assert "\ud800" not in str(caught.value) and "xxxxxxxxxxx" not in str(caught.value)


def test_check_text_pattern_and_clean_text():
    assert check_text("gpt2", max_length=10, pattern=r"[a-z0-9]+") == "gpt2"
    with pytest.raises(InvalidValue, match="expected form"):
        check_text("../gpt2", max_length=10, pattern=r"[a-z0-9]+")


def test_check_choice_and_int_keep_types_apart():
    assert check_choice("UMAP", ["PCA (quick)", "UMAP"]) == "UMAP"
    with pytest.raises(InvalidValue):
        check_choice("umap", ["PCA (quick)", "UMAP"])
    with pytest.raises(InvalidValue):
        check_choice(True, [1, 2])                  # a bool never stands for 1
    assert check_int(5, minimum=0, maximum=9) == 5
    for bad in (True, 5.0, "5", 10, -1):
        with pytest.raises(InvalidValue):
            check_int(bad, minimum=0, maximum=9)


def test_check_list_keeps_the_good_entries():
    item = lambda v: check_choice(v, ["a", "b", "c"])
    assert check_list(["b", "a", "b"], item, max_items=5) == ["b", "a"]
    with pytest.raises(PartlyInvalid, match="1 of 3 entries") as caught:
        check_list(["a", "zzz", "c"], item, max_items=5)
    assert caught.value.kept == ["a", "c"]
    with pytest.raises(InvalidValue, match="more than 2"):
        check_list(["a", "b", "c"], item, max_items=2)
    with pytest.raises(InvalidValue, match="not a list"):
        check_list("abc", item, max_items=5)


def test_printable_replaces_lone_surrogates():
    assert has_lone_surrogate("a\udc80") and not has_lone_surrogate("caf\u00e9 \U0001F600")
    assert printable("a\udc80b") == "a\ufffdb" and printable("ok") == "ok"


# ---- core.uploads ------------------------------------------------------------------------------------------
def test_uploads_are_content_addressed_and_resolved_by_name(home):
    from core.uploads import UPLOAD_NAME_RE, save_upload, upload_name_of, upload_path

    name = save_upload(b"monday tuesday\n", "week.TXT")
    assert UPLOAD_NAME_RE.match(name) and name.endswith(".txt")
    assert save_upload(b"monday tuesday\n", "again.txt") == name          # same content, same name
    assert upload_path(name).read_bytes() == b"monday tuesday\n"
    assert upload_name_of(name) == name
    assert upload_name_of(str(home / "uploads" / name)) == name          # a full path inside the folder: accepted
    assert not [p for p in (home / "uploads").iterdir() if p.name.startswith(".upload-")]   # no temp file left


@pytest.mark.parametrize("data, filename, needle", [
    (b"text", "corpus.pdf", ".txt, .jsonl and .csv"), (b"  \n", "empty.txt", "empty"),
])
def test_save_upload_refuses_what_the_corpus_reader_cannot_use(home, data, filename, needle):
    from core.uploads import UploadError, save_upload

    with pytest.raises(UploadError, match=needle):
        save_upload(data, filename)


def test_save_upload_enforces_the_size_limit(home, monkeypatch):
    from core import uploads

    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 10)
    with pytest.raises(uploads.UploadError, match="limited to"):
        uploads.save_upload(b"x" * 11, "big.txt")


def test_only_files_in_the_upload_folder_resolve(home, tmp_path):
    from core.uploads import UploadError, save_upload, upload_name_of, upload_path

    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    save_upload(b"fine\n", "ok.txt")
    hostile = [str(secret), "/etc/passwd", "../secret.txt", "0123456789abcdef.txt/../../secret.txt",
               str(home / "uploads" / ".." / ".." / "secret.txt"), "", "0123456789abcdef.txt", 17, None]
    for value in hostile:
        with pytest.raises(UploadError, match="uploaded to this Atlas|no longer on this Atlas"):
            upload_name_of(value)   # type: ignore[arg-type]
    # a link planted in the upload folder that points outside it is refused too
    link = home / "uploads" / "fedcba9876543210.txt"
    os.symlink(secret, link)
    with pytest.raises(UploadError):
        upload_path("fedcba9876543210.txt")
    with pytest.raises(UploadError):
        upload_name_of(str(link))


def test_server_upload_limit_matches_core():
    import tomllib
    from pathlib import Path

    from core.sources.corpus import MAX_FILE_BYTES
    from core.uploads import MAX_BUNDLE_UPLOAD_MB, MAX_UPLOAD_BYTES, MAX_UPLOAD_MB, SERVER_UPLOAD_MB

    config = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == SERVER_UPLOAD_MB == max(MAX_UPLOAD_MB, MAX_BUNDLE_UPLOAD_MB)
    assert MAX_UPLOAD_BYTES <= MAX_FILE_BYTES        # an accepted upload is read whole
    assert config["client"]["showErrorDetails"] == "none"
    assert config["client"]["toolbarMode"] == "viewer"    # no Deploy button


# ---- core.known_dirs ---------------------------------------------------------------------------------------
def test_known_directories_resolve_only_what_was_remembered(home, tmp_path):
    from core.known_dirs import KnownDirectories

    known = KnownDirectories()
    sae_dir = tmp_path / "sae"
    sae_dir.mkdir()
    dir_id = known.remember("sae", str(sae_dir / ".." / "sae"))
    assert dir_id == KnownDirectories.id_for("sae", str(sae_dir))
    assert known.path_of("sae", dir_id) == str(sae_dir.resolve())
    assert known.is_known("sae", str(sae_dir)) and not known.is_known("model", str(sae_dir))
    assert known.path_of("model", dir_id) is None                 # ids are per kind
    assert KnownDirectories().path_of("sae", "0123456789ab") is None
    for bad in ("../../etc", "/etc", "", "0123456789abcdef", None):
        assert known.path_of("sae", bad) is None   # type: ignore[arg-type]


# ---- core.sources.chunking ---------------------------------------------------------------------------------
def test_chunking_uses_the_saes_context_and_says_so_when_they_disagree():
    from core.sources.chunking import chunking_for_saes
    from core.sources.corpus import CorpusSpec

    base = CorpusSpec(source="world")
    agree = [SimpleNamespace(context_size=128, prepend_bos=True)] * 2
    spec, note = chunking_for_saes(agree, base)
    assert (spec.context_size, spec.prepend_bos, note) == (128, True, None)

    mixed = [SimpleNamespace(context_size=1024, prepend_bos=True), SimpleNamespace(context_size=128, prepend_bos=False),
             SimpleNamespace(context_size=None, prepend_bos=None)]
    spec, note = chunking_for_saes(mixed, base)
    assert spec.context_size == 128 and spec.prepend_bos is True
    assert "128 and 1024" in note and "the shortest" in note and "BOS" in note

    silent = [SimpleNamespace(context_size=None, prepend_bos=None)]
    spec, note = chunking_for_saes(silent, base)
    assert spec == base and note is None


def test_atlas_errors_carry_the_checks():
    from core.uploads import UploadError

    assert issubclass(InvalidValue, AtlasError) and issubclass(UploadError, AtlasError)
