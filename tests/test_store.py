"""The artifact store: deterministic keys, round trips, atomic writes, no pickle."""

from __future__ import annotations

import numpy as np
import pytest

from core import store as store_module
from core.errors import ArtifactError
from core.store import CODE_VERSION, ArtifactStore, artifact_key


def test_key_is_deterministic_and_order_independent():
    a = artifact_key(model="m", settings={"b": 1, "a": [1, 2]})
    b = artifact_key(settings={"a": [1, 2], "b": 1}, model="m")
    assert a == b and len(a) == 64
    assert artifact_key(model="m", settings={"b": 2, "a": [1, 2]}) != a
    assert artifact_key(model="m2", settings={"b": 1, "a": [1, 2]}) != a


def test_key_includes_code_version(monkeypatch):
    before = artifact_key(x=1)
    monkeypatch.setattr(store_module, "CODE_VERSION", CODE_VERSION + "-changed")
    assert artifact_key(x=1) != before


def test_round_trip(tmp_path):
    store = ArtifactStore(tmp_path)
    key = artifact_key(test="round-trip")
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b.ids": np.array([1, -2, 3], dtype=np.int64)}
    assert not store.has(key) and store.load(key) is None
    store.save(key, arrays, {"kind": "test", "n": np.int64(3), "ratio": 0.5})
    assert store.has(key)
    loaded = store.load(key)
    assert loaded.meta == {"kind": "test", "n": 3, "ratio": 0.5}
    for name, array in arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array)
        assert loaded.arrays[name].dtype == array.dtype
    # saving again under the same key replaces the artifact
    store.save(key, {"a": np.zeros(2)}, {"kind": "again"})
    assert store.load(key).meta["kind"] == "again" and set(store.load(key).arrays) == {"a"}


def test_interrupted_write_is_never_loaded(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    key = artifact_key(test="interrupted")
    real_save = np.lib.format.write_array
    calls = {"n": 0}

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process stopped halfway through the arrays
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_save)
    with pytest.raises(KeyboardInterrupt):
        store.save(key, {"a": np.ones(3), "b": np.ones(3)}, {"kind": "x"})
    monkeypatch.setattr(np.lib.format, "write_array", real_save)
    assert not store.has(key) and store.load(key) is None
    assert list(store.iter_keys()) == []
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / key[:2]).iterdir())


def test_directory_without_complete_marker_is_partial(tmp_path):
    store = ArtifactStore(tmp_path)
    key = artifact_key(test="partial")
    path = store.save(key, {"a": np.ones(3)}, {"kind": "x"})
    (path / store_module.COMPLETE_MARKER).unlink()  # as if the marker had never been written
    assert not store.has(key) and store.load(key) is None
    assert store.clean_partial() == 1 and not path.exists()


def test_no_pickle(tmp_path):
    store = ArtifactStore(tmp_path)
    key = artifact_key(test="pickle")
    with pytest.raises(ArtifactError):
        store.save(key, {"a": np.array([{"x": 1}], dtype=object)}, {})
    with pytest.raises(ArtifactError):
        store.save(key, {"../evil": np.ones(1)}, {})
    with pytest.raises(ArtifactError):
        store.load("../../etc")
    assert not store.has(key)


def test_list_delete_size(tmp_path):
    store = ArtifactStore(tmp_path)
    keys = [artifact_key(i=i) for i in range(3)]
    for i, key in enumerate(keys):
        store.save(key, {"a": np.zeros(100 * (i + 1), dtype=np.uint8)}, {"kind": f"k{i}"})
    infos = store.list()
    assert sorted(i.key for i in infos) == sorted(keys)
    assert {i.kind for i in infos} == {"k0", "k1", "k2"}
    summary = store.size_summary()
    assert summary["artifacts"] == 3 and summary["bytes"] >= 600
    assert store.delete(keys[0]) and not store.has(keys[0]) and not store.delete(keys[0])
    assert store.size_summary()["artifacts"] == 2


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "c"))
    assert ArtifactStore().root == tmp_path / "c"
