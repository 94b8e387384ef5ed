"""Session bundles: a session with the artifacts it relies on and a static report, as one zip file.

A bundle is untrusted input. `read_bundle` checks everything in memory before anything is written:
the zip's central directory (member count and size, read from its end record before zipfile parses it),
each member's name (fixed layout, no paths, links or duplicates), compression (stored or deflate only, no
encryption), inflated size (counted while reading, against the caps), the manifest's sha256 and size of
every member, the session document (core.sessions), each artifact's meta (a JSON object with a "kind")
and arrays (core.npy: numeric dtypes only, shape checked before allocation), and a harvest's structure.
Any failure is a SessionFileError that says what to do. `import_bundle` then writes the artifacts, all or
nothing, into their own read-only namespace of the artifact store (core.store), never over this machine's
own results, and saves the session with that namespace. The format is documented in docs/SESSIONS.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Mapping, Protocol

import jsonschema
import numpy as np

from core.errors import AtlasError, SessionFileError
from core.jsonable import jsonable
from core.npy import array_from_bytes
from core.sessions import ARTIFACT_KEY_RE, Session, SessionStore, _now, parse_json, session_from_json

BUNDLE_VERSION = 2   # 2: sha256 and size of every member in bundle.json
MAX_BUNDLE_FILES = 4096                 # entries in one bundle zip
MAX_BUNDLE_FILE_BYTES = 512 * 1024**2   # one member, inflated
MAX_BUNDLE_TOTAL_BYTES = 2 * 1024**3    # all members, inflated
MAX_MANIFEST_BYTES = 4 * 1024**2
_MAX_DIRECTORY_ENTRY = 46 + 1024 + 256  # a central directory record, its name and extra field, generously
_READ_BLOCK = 1 << 20

_ARRAY_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_MEMBER_RE = re.compile(
    r"^(bundle\.json|session\.json|report\.html"
    r"|artifacts/(?P<key>[0-9a-f]{64})/(?P<file>meta\.json|[A-Za-z0-9_.-]{1,128}\.npy))$")

_KEYS = {"type": "array", "maxItems": 256, "uniqueItems": True,
         "items": {"type": "string", "pattern": ARTIFACT_KEY_RE.pattern}}
MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "bundle_version", "session_version", "artifacts", "missing", "created", "files"],
    "properties": {
        "format": {"const": "atlas-bundle"},
        "bundle_version": {"const": BUNDLE_VERSION},
        "session_version": {"type": "integer"},
        "artifacts": _KEYS,
        "missing": _KEYS,
        "created": {"type": "string", "maxLength": 64},
        "files": {
            "type": "object", "maxProperties": MAX_BUNDLE_FILES,
            "propertyNames": {"pattern": _MEMBER_RE.pattern},
            "additionalProperties": {
                "type": "object", "additionalProperties": False, "required": ["sha256", "bytes"],
                "properties": {"sha256": {"type": "string", "pattern": r"^[0-9a-f]{64}$"},
                               "bytes": {"type": "integer", "minimum": 0}},
            },
        },
    },
}


class ArtifactLike(Protocol):
    arrays: dict[str, np.ndarray]
    meta: dict


class StoreLike(Protocol):  # core.store.ArtifactStore or StoreView
    def load(self, key: str) -> ArtifactLike | None: ...


# --------------------------------------------------------------------------- export

def report_html(session: Session, figures: Iterable[tuple[str, Any]] = ()) -> str:
    """A static HTML page: the session's title, notes and sources, then every figure.

    plotly.js is inlined once (with the first figure), so the page opens offline without Python.
    `figures` are (caption, plotly Figure) pairs.
    """
    from html import escape

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{escape(session.title)} - Atlas</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "pre{background:#f5f5f5;padding:1em;overflow:auto}h2{margin-top:2em}.caption{color:#555}</style>",
        "</head><body>",
        f"<h1>{escape(session.title)}</h1>",
        f"<p class='caption'>Atlas session, created {escape(session.created)}; page: {escape(session.page)}</p>",
    ]
    if session.notes:
        parts.append(f"<h2>Notes</h2><p style='white-space:pre-wrap'>{escape(session.notes)}</p>")
    if session.prompt:
        parts.append(f"<h2>Prompt</h2><pre>{escape(session.prompt)}</pre>")
    if session.selected_feature is not None:
        parts.append(f"<p>Selected feature: <b>{session.selected_feature}</b> on "
                     f"<code>{escape(str(session.selected_layer))}</code></p>")
    parts.append("<h2>Sources and settings</h2><pre>"
                 + escape(json.dumps({"sources": session.sources, "settings": session.settings}, indent=2))
                 + "</pre>")
    first = True
    for caption, figure in figures:
        parts.append(f"<h2>{escape(caption)}</h2>")
        parts.append(figure.to_html(full_html=False, include_plotlyjs=True if first else False))
        first = False
    parts.append("</body></html>")
    return "\n".join(parts)


def export_bundle(session: Session, store: StoreLike | None, figures: Iterable[tuple[str, Any]] = ()) -> bytes:
    """The session as a zip: bundle.json, session.json, artifacts/<key>/..., report.html.

    bundle.json lists the sha256 and size of every other member. Artifacts the store no longer holds (or
    that failed their checks) are left out and listed under "missing".
    """
    buffer = io.BytesIO()
    included, missing, files = [], [], {}

    def add(archive: zipfile.ZipFile, name: str, content: bytes) -> None:
        archive.writestr(name, content)
        files[name] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}

    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in session.artifact_keys:
            artifact = store.load(key) if store is not None else None
            if artifact is None:
                missing.append(key)
                continue
            for name, array in artifact.arrays.items():
                if not _ARRAY_NAME_RE.match(name):
                    raise SessionFileError(f"Artifact {key} has an array name that cannot be bundled: {name!r}")
                array_bytes = io.BytesIO()
                np.save(array_bytes, np.asarray(array), allow_pickle=False)
                add(archive, f"artifacts/{key}/{name}.npy", array_bytes.getvalue())
            add(archive, f"artifacts/{key}/meta.json", json.dumps(jsonable(artifact.meta)).encode("utf-8"))
            included.append(key)
        add(archive, "session.json", session.to_json().encode("utf-8"))
        add(archive, "report.html", report_html(session, figures).encode("utf-8", "replace"))
        archive.writestr("bundle.json", json.dumps({
            "format": "atlas-bundle", "bundle_version": BUNDLE_VERSION, "session_version": session.version,
            "artifacts": included, "missing": missing, "created": _now(), "files": files}, indent=2))
    return buffer.getvalue()


# --------------------------------------------------------------------------- reading

@dataclass
class BundleContents:
    session: Session
    manifest: dict[str, Any]
    artifacts: dict[str, tuple[dict[str, np.ndarray], dict]]   # key -> (arrays, meta)
    report_html: str | None


def _corrupt(name: str, error: BaseException | str) -> SessionFileError:
    return SessionFileError(f"The bundle is damaged: {name} cannot be read ({error}). "
                            "Copy or download it again, or ask for a fresh export.")


def _check_directory(handle: BinaryIO, max_files: int) -> None:
    """Refuse a zip whose central directory is too large before zipfile parses it into memory:
    zipfile makes one object per entry, so 50 bytes of input per entry would cost ~10x in memory."""
    handle.seek(0, io.SEEK_END)
    size = handle.tell()
    tail_length = min(size, 22 + 65_535 + 20)
    handle.seek(size - tail_length)
    tail = handle.read(tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise SessionFileError("This is not an Atlas bundle (not a readable zip file: no end-of-archive record).")
    _, _, _, _, entries, directory_size, _, _ = struct.unpack_from("<4s4H2LH", tail, at)
    if at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":   # zip64: the real counts are in another record
        _, _, record_offset, _ = struct.unpack_from("<4sLQL", tail, at - 20)
        if record_offset > size - 56:
            raise _corrupt("the zip64 directory", "it points outside the file")
        handle.seek(record_offset)
        record = handle.read(56)
        if record[:4] != b"PK\x06\x06":
            raise _corrupt("the zip64 directory", "bad signature")
        entries, directory_size = struct.unpack_from("<2Q", record, 32)
    if entries > max_files:
        raise SessionFileError(f"The bundle holds {entries:,} files; the limit is {max_files:,}.")
    if directory_size > max_files * _MAX_DIRECTORY_ENTRY:
        raise SessionFileError(f"The bundle's file list is {directory_size:,} bytes; that is more than "
                               f"{max_files:,} files can need.")
    handle.seek(0)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """The inflated member, read in blocks and stopped as soon as it passes `cap` bytes."""
    blocks, total = [], 0
    with archive.open(info) as handle:
        while block := handle.read(min(_READ_BLOCK, cap + 1 - total)):
            total += len(block)
            if total > cap:
                raise SessionFileError(f"{info.filename!r} in the bundle unpacks to more than {cap:,} bytes "
                                       "(the bundle's size limit).")
            blocks.append(block)
    if total != info.file_size:
        raise _corrupt(info.filename, f"{total:,} bytes where its header says {info.file_size:,}")
    return b"".join(blocks)


def _read_members(source: BinaryIO, max_files: int, max_file_bytes: int, max_total_bytes: int) -> dict[str, bytes]:
    _check_directory(source, max_files)
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile as error:
        raise SessionFileError(f"This is not an Atlas bundle (not a readable zip file: {error}).") from None
    except Exception as error:  # noqa: BLE001 - zipfile's parser raises many kinds on crafted input
        raise _corrupt("its file list", f"{type(error).__name__}: {error}") from None
    files: dict[str, bytes] = {}
    total = 0
    with archive:
        members = archive.infolist()
        if len(members) > max_files:
            raise SessionFileError(f"The bundle holds {len(members)} files; the limit is {max_files}.")
        for info in members:
            name = info.filename
            if info.is_dir():
                if ".." in name.split("/") or name.startswith("/"):
                    raise SessionFileError(f"The bundle holds an unsafe path: {name!r}.")
                continue
            _check_member_name(name)
            if name in files:
                raise SessionFileError(f"The bundle holds {name!r} twice; export it again.")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SessionFileError(f"The bundle holds a link ({name!r}); links are not allowed.")
            if info.flag_bits & 0x1:
                raise SessionFileError(f"{name!r} in the bundle is encrypted; Atlas bundles are never "
                                       "encrypted: export it again without a password.")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise SessionFileError(f"{name!r} in the bundle uses compression method {info.compress_type}; "
                                       "Atlas reads stored or deflated members only: export it again.")
            if info.file_size > max_file_bytes:
                raise SessionFileError(f"{name!r} in the bundle is {info.file_size:,} bytes; "
                                       f"the limit is {max_file_bytes:,}.")
            if total + info.file_size > max_total_bytes:
                raise SessionFileError(f"The bundle unpacks to more than {max_total_bytes:,} bytes.")
            try:
                content = _read_member(archive, info, min(max_file_bytes, max_total_bytes - total))
            except SessionFileError:
                raise
            except Exception as error:  # noqa: BLE001 - bad CRC, corrupt deflate, bad local header, ...
                raise _corrupt(repr(name), f"{type(error).__name__}: {error}") from None
            total += len(content)
            files[name] = content
    return files


def _check_member_name(name: str) -> None:
    if (name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/")
            or re.match(r"^[A-Za-z]:", name) or "\x00" in name):
        raise SessionFileError(f"The bundle holds an unsafe path: {name!r}.")
    if not _MEMBER_RE.match(name):
        raise SessionFileError(f"The bundle holds an unexpected file: {name!r}.")


def _check_manifest(files: dict[str, bytes]) -> dict[str, Any]:
    if "bundle.json" not in files or "session.json" not in files:
        raise SessionFileError("This is not an Atlas bundle: bundle.json or session.json is missing.")
    manifest = parse_json(files["bundle.json"], "bundle's bundle.json", MAX_MANIFEST_BYTES)
    if not isinstance(manifest, dict) or manifest.get("format") != "atlas-bundle":
        raise SessionFileError("This is not an Atlas bundle (bundle.json has no 'atlas-bundle' format).")
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise SessionFileError(f"This bundle has format version {manifest.get('bundle_version')!r}; "
                               f"this Atlas reads version {BUNDLE_VERSION}. Export it again with a current Atlas.")
    try:
        jsonschema.validate(manifest, MANIFEST_SCHEMA, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise SessionFileError(f"The bundle's bundle.json is not valid at {where}: {error.message[:300]}") from None
    listed = manifest["files"]
    present = set(files) - {"bundle.json"}
    if present != set(listed):
        extra, absent = sorted(present - set(listed)), sorted(set(listed) - present)
        details = (f"unlisted {extra[:3]} " if extra else "") + (f"missing {absent[:3]}" if absent else "")
        raise SessionFileError(f"The bundle does not match its manifest: {details.strip()}. Export it again.")
    for name, expected in listed.items():
        content = files[name]
        if len(content) != expected["bytes"] or hashlib.sha256(content).hexdigest() != expected["sha256"]:
            raise _corrupt(repr(name), "its sha256 checksum does not match the manifest")
    return manifest


def read_bundle(data: bytes | str | Path, *, max_files: int = MAX_BUNDLE_FILES,
                max_file_bytes: int = MAX_BUNDLE_FILE_BYTES,
                max_total_bytes: int = MAX_BUNDLE_TOTAL_BYTES) -> BundleContents:
    """Read and check a bundle in memory (see the module docstring); nothing is written or executed."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        files = _read_members(io.BytesIO(bytes(data)), max_files, max_file_bytes, max_total_bytes)
    else:
        try:
            with open(data, "rb") as handle:
                files = _read_members(handle, max_files, max_file_bytes, max_total_bytes)
        except OSError as error:
            raise SessionFileError(f"The bundle {str(data)!r} cannot be read ({error.strerror or error}).") from None
    manifest = _check_manifest(files)
    session = session_from_json(files["session.json"])
    keys_present = {m.group("key") for name in files if (m := _MEMBER_RE.match(name)) and m.group("key")}
    for key in sorted(keys_present):
        if key not in session.artifact_keys:
            raise SessionFileError(f"The bundle holds artifact {key!r}, which its session does not refer to.")
    if keys_present != set(manifest["artifacts"]):
        raise SessionFileError("The bundle's artifacts do not match the list in its bundle.json. Export it again.")
    artifacts = {key: _read_artifact(key, files, max_file_bytes) for key in sorted(keys_present)}
    report = files.get("report.html")
    return BundleContents(session, manifest, artifacts,
                          report.decode("utf-8", "replace") if report is not None else None)


def _read_artifact(key: str, files: Mapping[str, bytes], max_file_bytes: int) -> tuple[dict[str, np.ndarray], dict]:
    prefix = f"artifacts/{key}/"
    if prefix + "meta.json" not in files:
        raise SessionFileError(f"Artifact {key[:12]}… in the bundle has no meta.json. Export it again.")
    meta = parse_json(files[prefix + "meta.json"], f"bundle's {prefix}meta.json", max_file_bytes, allow_nan=True)
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str) or len(meta["kind"]) > 200:
        raise SessionFileError(f"{prefix}meta.json in the bundle must be a JSON object with a 'kind'.")
    arrays = {}
    for name, content in files.items():
        if name.startswith(prefix) and name.endswith(".npy"):
            label = name[len(prefix):]
            try:
                arrays[label[:-4]] = array_from_bytes(content, f"{name} in the bundle", max_file_bytes)
            except AtlasError as error:
                raise SessionFileError(f"{error} Export the bundle again.") from None
    _check_kind(key, arrays, meta)
    return arrays, meta


def _check_kind(key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """What a page reads from an artifact of this kind must be there, with consistent shapes."""
    kind = meta["kind"]
    where = f"Artifact {key[:12]}… ({kind}) in the bundle"
    if kind.startswith("analysis:") and not isinstance(meta.get("result"), dict):
        raise SessionFileError(f"{where} has no result object. Export it again.")
    if kind == "feature_map":
        coords = arrays.get("coords")
        if coords is None or coords.ndim != 2 or coords.shape[1] != 2 or coords.dtype.kind != "f":
            raise SessionFileError(f"{where} needs float coordinates of shape [n, 2]. Export it again.")
    if kind == "harvest":
        from core.harvest.result import HarvestResult

        try:   # the harvest's own reader, on arrays it has never seen: any failure means a malformed artifact
            result = HarvestResult.from_arrays(arrays, meta)
            _check_harvest_shapes(result)
        except Exception as error:  # noqa: BLE001
            raise SessionFileError(f"{where} is not a readable harvest ({type(error).__name__}: {error}). "
                                   "Export it again.") from None


def _check_harvest_shapes(result: Any) -> None:
    """What the pages index must agree: per-site shapes, per-feature arrays of d_sae rows, the sparse
    quantile cells inside [d_sae, n_bands, m], the co-occurrence CSR inside [n_chunks, d_sae]."""
    for name, site in result.sites.items():
        d = np.shape(site.mean)[0]
        if np.shape(site.cov) != (d, d) or np.ndim(site.reservoir) != 2 or np.shape(site.reservoir)[1] != d:
            raise ValueError(f"site {name}: mean, cov and reservoir shapes disagree")
    for label, sae in result.saes.items():
        d_sae = np.shape(sae.l1_mass)[0]
        for attribute in ("fire_count", "max_act", "hist", "top_values", "top_chunk", "top_pos", "top_tokens",
                          "top_acts"):
            value = sae.__dict__.get(attribute)   # stored arrays only (properties may build dense views)
            if value is not None and (np.ndim(value) == 0 or np.shape(value)[0] != d_sae):
                raise ValueError(f"SAE {label}: {attribute} has {np.shape(value)} for {d_sae} features")
        cells = sae.__dict__.get("q_cells")
        if cells is not None and len(cells):
            n_cells = d_sae * max(len(sae.quantile_edges) - 1, 0) * int(sae.n_quantile_samples)
            lengths = {len(sae.__dict__.get(a, cells)) for a in ("q_values", "q_chunk", "q_pos", "q_tokens", "q_acts")}
            if lengths != {len(cells)} or np.min(cells) < 0 or np.max(cells) >= n_cells or np.any(np.diff(cells) < 0):
                raise ValueError(f"SAE {label}: the quantile cells do not fit [d_sae, n_bands, samples]")
        offsets, ids = sae.__dict__.get("cooc_offsets"), sae.__dict__.get("cooc_ids")
        if offsets is not None and ids is not None:
            offsets = np.asarray(offsets, dtype=np.int64)
            bad_offsets = len(offsets) != len(sae.cooc_chunks) + 1 or offsets[0] != 0 or offsets[-1] != len(ids) \
                or np.any(np.diff(offsets) < 0)
            if bad_offsets or (len(ids) and (np.min(ids) < 0 or np.max(ids) >= d_sae)):
                raise ValueError(f"SAE {label}: the co-occurrence incidence does not fit [chunks, d_sae]")


# --------------------------------------------------------------------------- import

def import_bundle(data: bytes | str | Path, sessions: SessionStore, store: Any | None) -> str:
    """Check a bundle, restore its artifacts into their own namespace of `store` (an ArtifactStore; the
    namespace is named after the new session id), save its session; return the new session id.

    All or nothing: when saving the session fails, the namespace is removed again.
    """
    contents = read_bundle(data)
    session_id = sessions.new_id()
    namespace = None
    if store is not None and contents.artifacts:
        store.write_namespace(session_id, contents.artifacts)
        namespace = session_id
    try:
        return sessions.save(contents.session, session_id, artifact_namespace=namespace)
    except BaseException:
        if namespace is not None and store is not None:
            store.delete_namespace(namespace)
        raise


def run_import(path: str | Path, sessions_path: str | Path | None = None,
               store_root: str | Path | None = None) -> str:
    """Import the bundle file at `path` into the SQLite file `sessions_path` and the artifact store at
    `store_root` (None: their defaults); returns the new session id. Raises AtlasError."""
    from core.store import ArtifactStore

    return import_bundle(Path(path), SessionStore(sessions_path), ArtifactStore(store_root))
