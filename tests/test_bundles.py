"""Bundles as untrusted input: zip faults (bad CRC, corrupt deflate, encryption, unknown compression,
lying sizes, too many entries, duplicates), checksums, npy headers, malformed artifacts, the imported
namespace (never the local entries) and all-or-nothing imports; hypothesis over bundle members."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.bundles import export_bundle, import_bundle, read_bundle
from core.errors import SessionFileError
from core.npy import NpyError, array_from_bytes
from core.sessions import Session, SessionStore
from core.store import ArtifactStore, artifact_key

KEY = artifact_key(test="bundle")


def _session(keys=(KEY,)) -> Session:
    return Session(title="shared", artifact_keys=list(keys), created="2026-01-02T03:04:05+00:00")


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _members(artifacts: dict[str, dict[str, bytes]] | None = None, session: Session | None = None) -> dict[str, bytes]:
    """A well-formed bundle's members: the manifest checksums everything else."""
    artifacts = {KEY: {"coords.npy": _npy(np.zeros((4, 2), np.float32)), "meta.json": b'{"kind": "test"}'}} \
        if artifacts is None else artifacts
    session = session or _session(tuple(artifacts))
    members = {"session.json": session.to_json().encode()}
    for key, files in artifacts.items():
        members.update({f"artifacts/{key}/{name}": content for name, content in files.items()})
    files = {name: {"sha256": hashlib.sha256(c).hexdigest(), "bytes": len(c)} for name, c in members.items()}
    manifest = {"format": "atlas-bundle", "bundle_version": 2, "session_version": 1, "artifacts": sorted(artifacts),
                "missing": [], "created": "2026-01-01T00:00:00+00:00", "files": files}
    return {"bundle.json": json.dumps(manifest).encode(), **members}


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _patch_headers(data: bytes, name: bytes, **fields) -> bytes:
    """Rewrite fields of `name`'s local and central headers (flags, method, sizes), as a crafted zip would."""
    out = bytearray(data)
    local = {"flags": 6, "method": 8, "compressed": 18, "size": 22}
    central = {"flags": 8, "method": 10, "compressed": 20, "size": 24}
    for signature, offsets, name_at in ((b"PK\x03\x04", local, 30), (b"PK\x01\x02", central, 46)):
        at = out.find(signature)
        while at >= 0:
            name_length = struct.unpack_from("<H", out, at + name_at - (4 if signature == b"PK\x03\x04" else 18))[0]
            if bytes(out[at + name_at: at + name_at + name_length]) == name:
                for field, value in fields.items():
                    fmt = "<H" if field in ("flags", "method") else "<L"
                    struct.pack_into(fmt, out, at + offsets[field], value)
            at = out.find(signature, at + 4)
    return bytes(out)


def test_a_valid_bundle_reads():
    contents = read_bundle(_zip(_members()))
    arrays, meta = contents.artifacts[KEY]
    assert arrays["coords"].shape == (4, 2) and meta == {"kind": "test"}


def test_bad_crc_is_a_clear_error():
    data = bytearray(_zip(_members(), compression=zipfile.ZIP_STORED))
    at = data.find(b'"kind": "test"')
    data[at + 2] ^= 0x20                                    # one bit of the stored content
    with pytest.raises(SessionFileError, match="damaged.*(CRC|crc)"):
        read_bundle(bytes(data))


def test_corrupt_deflate_is_a_clear_error():
    members = _members()
    data = bytearray(_zip(members))
    name = f"artifacts/{KEY}/coords.npy".encode()
    at = data.find(name) + len(name)                        # the compressed bytes follow the local header
    for i in range(at, at + 20):
        data[i] = 0xFF
    with pytest.raises(SessionFileError, match="damaged"):
        read_bundle(bytes(data))


def test_encrypted_members_are_refused():
    data = _patch_headers(_zip(_members()), b"session.json", flags=0x1)
    with pytest.raises(SessionFileError, match="encrypted"):
        read_bundle(data)


@pytest.mark.parametrize("method", [99, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_unknown_or_unexpected_compression_is_refused(method):
    data = _patch_headers(_zip(_members()), b"session.json", method=method)
    with pytest.raises(SessionFileError, match="compression method"):
        read_bundle(data)


def test_a_member_lying_about_its_size_inflates_no_further_than_its_header():
    """50 MB of zeros deflate to ~50 KB; the headers claim 1 000 bytes. Reading stops at the claim (the CRC
    then fails), so memory stays small."""
    members = _members()
    bomb = b"\x00" * 50_000_000
    members[f"artifacts/{KEY}/bomb.npy"] = bomb
    data = _patch_headers(_zip(members), f"artifacts/{KEY}/bomb.npy".encode(), size=1000)
    tracemalloc.start()
    try:
        with pytest.raises(SessionFileError, match="damaged|checksum|manifest"):
            read_bundle(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_inflated_totals_are_capped_while_reading():
    """Five 4 MB members that deflate to ~4 KB each: the total cap on inflated bytes refuses the bundle
    before the members are all read."""
    artifacts = {KEY: {f"z{i}.npy": _npy(np.zeros(500_000)) for i in range(5)} | {"meta.json": b'{"kind": "test"}'}}
    data = _zip(_members(artifacts))
    assert len(data) < 200_000
    with pytest.raises(SessionFileError, match="more than 10,000,000 bytes"):
        read_bundle(data, max_total_bytes=10_000_000)
    with pytest.raises(SessionFileError, match="limit is 1,000,000"):
        read_bundle(data, max_file_bytes=1_000_000)


def test_too_many_entries_are_refused_before_zipfile_parses_them(monkeypatch):
    members = {f"artifacts/{KEY}/a{i}.npy": b"" for i in range(5000)}
    data = _zip(members, compression=zipfile.ZIP_STORED)
    opened = []
    real = zipfile.ZipFile.__init__
    monkeypatch.setattr(zipfile.ZipFile, "__init__", lambda self, *a, **k: (opened.append(1), real(self, *a, **k))[1])
    with pytest.raises(SessionFileError, match="5,000 files"):
        read_bundle(data)
    assert not opened


def test_duplicate_members_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning):
        for name, content in _members().items():
            archive.writestr(name, content)
        archive.writestr("session.json", _session().to_json())
    with pytest.raises(SessionFileError, match="twice"):
        read_bundle(buffer.getvalue())


def test_checksums_and_manifest_are_enforced():
    members = _members()
    members[f"artifacts/{KEY}/meta.json"] = b'{"kind": "forged"}'      # changed after export (valid CRC)
    with pytest.raises(SessionFileError, match="sha256"):
        read_bundle(_zip(members))
    members = _members()
    members[f"artifacts/{KEY}/extra.npy"] = _npy(np.ones(2))            # not in the manifest
    with pytest.raises(SessionFileError, match="does not match its manifest"):
        read_bundle(_zip(members))
    manifest = json.loads(_members()["bundle.json"])
    manifest["bundle_version"] = 1                                     # the old format without checksums
    with pytest.raises(SessionFileError, match="version 1.*Export it again"):
        read_bundle(_zip({**_members(), "bundle.json": json.dumps(manifest).encode()}))


def test_npy_headers_are_checked_before_allocation():
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000,), }".ljust(117) + "\n"
    forged = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + b"\x00" * 64
    with pytest.raises(NpyError, match="declares shape"):
        array_from_bytes(forged)
    artifacts = {KEY: {"huge.npy": forged, "meta.json": b'{"kind": "test"}'}}
    with pytest.raises(SessionFileError, match="declares shape"):
        read_bundle(_zip(_members(artifacts)))
    for dtype in ("<U3", "|O", "|V8", "<c16", "[('a', '<i4')]"):
        header = f"{{'descr': {dtype if dtype.startswith('[') else repr(dtype)}, 'fortran_order': False, 'shape': (1,), }}"
        header = header.ljust(117) + "\n"
        data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + b"\x00" * 16
        with pytest.raises(NpyError):
            array_from_bytes(data)


def test_malformed_artifacts_are_refused():
    harvest = {KEY: {"meta.json": json.dumps({"kind": "harvest", "sites": {"x": {"index": 0, "n": 1}}}).encode()}}
    with pytest.raises(SessionFileError, match="not a readable harvest"):
        read_bundle(_zip(_members(harvest)))
    no_kind = {KEY: {"meta.json": b'{"result": {}}'}}
    with pytest.raises(SessionFileError, match="'kind'"):
        read_bundle(_zip(_members(no_kind)))
    bad_map = {KEY: {"meta.json": b'{"kind": "feature_map"}', "coords.npy": _npy(np.zeros(3))}}
    with pytest.raises(SessionFileError, match=r"\[n, 2\]"):
        read_bundle(_zip(_members(bad_map)))


@pytest.fixture
def local(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    store.save(KEY, {"coords": np.ones((4, 2), np.float32)}, {"kind": "test", "origin": "local"})
    return store, SessionStore(tmp_path / "sessions.sqlite")


def test_an_import_never_touches_the_local_entries(local):
    """Cache poisoning: a bundle carrying an artifact under a key this machine computed itself."""
    store, sessions = local
    forged = {KEY: {"coords.npy": _npy(np.full((4, 2), 666, np.float32)),
                    "meta.json": b'{"kind": "test", "origin": "forged"}'}}
    session_id = import_bundle(_zip(_members(forged)), sessions, store)
    assert store.load(KEY).meta["origin"] == "local"
    namespace = sessions.artifact_namespace(session_id)
    assert store.namespace(namespace).load(KEY).meta["origin"] == "forged"
    assert list(store.iter_keys()) == [KEY]
    assert sessions.delete(session_id) == namespace and store.delete_namespace(namespace)
    assert store.namespaces() == [] and store.load(KEY).meta["origin"] == "local"


def test_a_refused_import_leaves_nothing_behind(local, tmp_path, monkeypatch):
    store, sessions = local
    second = artifact_key(test="second")
    broken = {KEY: {"coords.npy": _npy(np.zeros((4, 2), np.float32)), "meta.json": b'{"kind": "test"}'},
              second: {"meta.json": b'{"kind": "harvest"}'}}
    with pytest.raises(SessionFileError):
        import_bundle(_zip(_members(broken, _session((KEY, second)))), sessions, store)
    assert store.namespaces() == [] and sessions.list() == []
    # the session cannot be saved after the artifacts were written: they are removed again
    monkeypatch.setattr(SessionStore, "save", lambda *a, **k: (_ for _ in ()).throw(SessionFileError("disk full")))
    with pytest.raises(SessionFileError, match="disk full"):
        import_bundle(_zip(_members()), sessions, store)
    assert store.namespaces() == []
    assert not [p for p in (tmp_path / "store" / "imports").iterdir()]


def test_export_of_an_imported_session_round_trips(local, tmp_path):
    from core.store import StoreView

    store, sessions = local
    other = artifact_key(test="imported only")
    data = _zip(_members({other: {"coords.npy": _npy(np.zeros((4, 2), np.float32)),
                                  "meta.json": b'{"kind": "test"}'}}))
    session_id = import_bundle(data, sessions, store)
    view = StoreView(store, store.namespace(sessions.artifact_namespace(session_id)))
    again = read_bundle(export_bundle(sessions.load(session_id), view))
    assert set(again.artifacts) == {other} and again.manifest["missing"] == []


# --------------------------------------------------------------------------- hypothesis

VALID = _zip(_members())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=8),
       st.integers(0, len(VALID)))
def test_any_corruption_of_a_bundle_is_an_atlas_error(flips, cut):
    """Bytes flipped anywhere (headers, names, CRCs, sizes, data, the central directory) and truncation:
    read_bundle returns a checked bundle or raises SessionFileError, never another exception."""
    data = bytearray(VALID)
    for at, mask in flips:
        data[at] ^= mask
    for candidate in (bytes(data), bytes(data[:cut])):
        try:
            contents = read_bundle(candidate)
        except SessionFileError:
            continue
        assert contents.session.title == "shared"     # what got through passed every checksum


_NAMES = st.sampled_from(["bundle.json", "session.json", "report.html", f"artifacts/{KEY}/meta.json",
                          f"artifacts/{KEY}/x.npy", f"artifacts/{'0' * 64}/y.npy", "../evil", "a/../../b",
                          "/abs", "C:/win", "dir/", "x\\y", "artifacts/k/meta.json"])
_CONTENT = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"{}", b"[]", b"null", b'{"kind": "harvest"}', b'{"kind": 1}', b"\xff\xfe", b"NaN",
                     b'"\\ud800"', b"[" * 5000, _npy(np.zeros(3)), _npy(np.array([1.5])), _session().to_json().encode()]),
    st.builds(lambda shape, dtype: _npy(np.zeros(shape, dtype)),
              st.lists(st.integers(0, 3), max_size=3).map(tuple), st.sampled_from(["<f4", "<i8", "|b1", ">f8"])),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_NAMES, _CONTENT, max_size=6), st.booleans())
def test_arbitrary_members_never_raise_a_foreign_exception(members, with_manifest):
    """Any mix of member names and contents, with or without a manifest that checksums them."""
    if with_manifest:
        listed = {n: {"sha256": hashlib.sha256(c).hexdigest(), "bytes": len(c)}
                  for n, c in members.items() if n != "bundle.json"}
        members = {**members, "bundle.json": json.dumps({
            "format": "atlas-bundle", "bundle_version": 2, "session_version": 1, "artifacts": [KEY],
            "missing": [], "created": "x", "files": listed}).encode()}
    try:
        read_bundle(_zip(members))
    except SessionFileError:
        pass
