"""The prebuilt snapshot (core.snapshot, core.organism.prebuild): what a fresh clone's first visit reads.

On the tiny organism: the snapshot round trip gives back exactly what a fresh run computes, a harvest that
arrived whole serves a smaller SAE set without a pass, and a stale or tampered snapshot is not used.
On the shipped snapshot: it was made by this code for the committed organism (every key the default pages
look up is in it), and its contents equal a fresh run (the cheap views and the layer-0 SAE's harvest are
recomputed here). When this fails, regenerate it: `python -m core.organism prebuild`.
"""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest

from core import snapshot
from core.harvest.components import SAE_ARRAYS, SITE_ARRAYS
from core.store import ArtifactStore

REGENERATE = "the shipped snapshot is stale: regenerate it with `python -m core.organism prebuild`"


@pytest.fixture
def fresh_seeding(monkeypatch):
    monkeypatch.setattr(snapshot, "_seeded", set())


def _same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        assert np.array_equal(np.asarray(value), np.asarray(b[name]), equal_nan=True), name


@pytest.fixture(scope="module")
def tiny_snapshot(tiny_organism_dir, tmp_path_factory):
    """The tiny organism's default views computed in a store and written as a snapshot."""
    from core.organism.prebuild import compute_default_views

    mp = pytest.MonkeyPatch()
    mp.setenv("ATLAS_ORGANISM_DIR", str(tiny_organism_dir))
    root = tmp_path_factory.mktemp("prebuild")
    store = ArtifactStore(root / "store")
    views = compute_default_views(store, ground_truth=False, checkpoints=False)   # the slowest views
    path = snapshot.write_snapshot(root / "organism.zip", store, views.keys)
    yield store, views, path
    mp.undo()


def test_seeded_store_holds_what_the_prebuild_computed(tiny_organism_dir, tiny_snapshot, tmp_path, fresh_seeding,
                                                       monkeypatch):
    monkeypatch.setenv("ATLAS_ORGANISM_DIR", str(tiny_organism_dir))
    store, views, path = tiny_snapshot
    seeded = ArtifactStore(tmp_path / "cache")
    report = snapshot.seed_store(seeded, path)
    assert report.skipped is None and sorted(report.copied) == sorted(views.keys)
    for key in views.keys:
        mine, theirs = seeded.load(key), store.load(key)
        _same_arrays(mine.arrays, theirs.arrays)
        assert mine.meta == theirs.meta
    # a second server process finds everything present and unpacks nothing
    monkeypatch.setattr(snapshot, "_seeded", set())
    monkeypatch.setattr(snapshot, "read_snapshot", lambda *_: pytest.fail("unpacked again"))
    again = snapshot.seed_store(seeded, path)
    assert again.copied == () and sorted(again.present) == sorted(views.keys)


def test_seeded_harvest_equals_a_fresh_run_and_serves_a_smaller_sae_set(tiny_organism_dir, tiny_snapshot, tmp_path,
                                                                         fresh_seeding, monkeypatch):
    from core.harvest import HarvestResult, HarvestSettings, harvest, harvest_cached
    from core.organism.prebuild import DEFAULT_HARVEST_TOKENS, default_inputs

    monkeypatch.setenv("ATLAS_ORGANISM_DIR", str(tiny_organism_dir))
    _, views, path = tiny_snapshot
    seeded = ArtifactStore(tmp_path / "cache")
    assert snapshot.seed_store(seeded, path).copied
    model, saes, corpus = default_inputs()
    settings = HarvestSettings(max_tokens=DEFAULT_HARVEST_TOKENS)
    fresh = harvest(model, saes, corpus, settings)
    shipped = HarvestResult.load(seeded, views.harvest_key)
    for label, sae in fresh.saes.items():
        for name in SAE_ARRAYS:
            assert np.array_equal(getattr(sae, name), getattr(shipped.saes[label], name)), (label, name)
    for site_name, site in fresh.sites.items():
        for name in SITE_ARRAYS:
            np.testing.assert_allclose(getattr(site, name), getattr(shipped.sites[site_name], name), rtol=1e-12)

    def no_pass(*_args):
        raise AssertionError("a harvest ran although every component came with the snapshot")

    fewer, _ = harvest_cached(model, saes[1:], corpus, settings, store=seeded, run_pass=no_pass)
    assert list(fewer.saes) == list(fresh.saes)[1:]
    for label in fewer.saes:
        _same_arrays({n: getattr(fewer.saes[label], n) for n in SAE_ARRAYS},
                     {n: getattr(shipped.saes[label], n) for n in SAE_ARRAYS})


def test_stale_or_tampered_snapshot_is_not_used(tiny_organism_dir, tiny_snapshot, tmp_path, fresh_seeding,
                                                monkeypatch, caplog):
    monkeypatch.setenv("ATLAS_ORGANISM_DIR", str(tiny_organism_dir))
    path = tiny_snapshot[2]
    # made by other code: nothing copied
    monkeypatch.setattr("core.store.CODE_VERSION", "harvest-999")
    stale = ArtifactStore(tmp_path / "stale")
    assert snapshot.seed_store(stale, path).skipped.startswith("made by other code")
    assert stale.list() == []
    monkeypatch.undo()
    monkeypatch.setenv("ATLAS_ORGANISM_DIR", str(tiny_organism_dir))
    monkeypatch.setattr(snapshot, "_seeded", set())
    # one array changed after the manifest was written: the bundle checks refuse it, nothing is copied
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("__l1_mass.npy"):
                data = data[:-8] + np.float64(123.0).tobytes()
            out.writestr(info, data)
    victim = ArtifactStore(tmp_path / "victim")
    with caplog.at_level(logging.WARNING, logger="atlas.snapshot"):
        report = snapshot.seed_store(victim, tampered)
    assert report.copied == () and "checksum" in report.skipped
    assert victim.list() == [] and "was not used" in caplog.text


# -------------------------------------------------------------------------- the shipped snapshot

class _SnapshotOnly:
    """A store that answers only from the snapshot's keys: a view the default pages would compute afresh
    (its key is not in the snapshot) fails at once instead of computing for a minute."""

    def __init__(self, store: ArtifactStore, keys: set[str]):
        self.store, self.keys = store, keys

    def load(self, key, mmap=True):
        assert key in self.keys, f"{REGENERATE} (a default view's key {key[:12]}... is not in it)"
        return self.store.load(key, mmap=mmap)

    def has(self, key):
        return self.load(key) is not None

    def save(self, key, arrays, meta):
        raise AssertionError(f"{REGENERATE} (a default view was computed afresh)")


def _seed_shipped(tmp_path):
    assert snapshot.SNAPSHOT_PATH.is_file(), REGENERATE
    size_mb = snapshot.SNAPSHOT_PATH.stat().st_size / 1e6
    assert size_mb < 12, f"the snapshot is {size_mb:.1f} MB: keep it to a few MB"
    seeded = ArtifactStore(tmp_path / "cache")
    report = snapshot.seed_store(seeded)
    assert report.skipped is None, f"{REGENERATE} ({report.skipped})"
    return seeded, set(report.copied)


@pytest.mark.slow
def test_shipped_snapshot_is_what_this_code_computes(tmp_path, fresh_seeding, monkeypatch):
    """Every key the default pages look up is in the snapshot; the cheap views recomputed from the shipped
    harvest equal the shipped ones; and a fresh harvest of the corpus's first 4,096 tokens through every SAE
    equals the shipped harvest where the two must agree: the L1 mass of every feature at each snapshot count
    up to 4,096 tokens (the encoders and the L1 path), and the splice-in quality (measured on the first 2,048
    tokens: the model's continuations and the decoders). ATLAS_FULL_SNAPSHOT_CHECK=1 recomputes the whole
    100,000-token harvest and compares every array (minutes on a loaded 2-core machine)."""
    import os

    from core import analysis
    from core import feature_map as fm
    from core.harvest import HarvestResult, HarvestSettings, harvest
    from core.organism.prebuild import DEFAULT_HARVEST_TOKENS, compute_default_views, default_inputs

    monkeypatch.delenv("ATLAS_ORGANISM_DIR", raising=False)
    seeded, shipped_keys = _seed_shipped(tmp_path)
    inputs = default_inputs()
    model, saes, corpus = inputs
    views = compute_default_views(_SnapshotOnly(seeded, shipped_keys), inputs=inputs)
    assert set(views.keys) == shipped_keys, REGENERATE
    shipped = HarvestResult.load(seeded, views.harvest_key)
    strict = _SnapshotOnly(seeded, shipped_keys)
    fresh_spectra = analysis.spectra_by_layer(shipped, harvest_key=views.harvest_key)
    assert fresh_spectra == analysis.spectra_by_layer(shipped, store=strict, harvest_key=views.harvest_key), REGENERATE
    for sae in saes:
        W_dec = sae.W_dec.detach().cpu().numpy()
        stored = fm.feature_map(W_dec, strict, "pca", key=fm.feature_map_key(W_dec, "pca", 15, 0.1, 0))
        np.testing.assert_allclose(fm.feature_map(W_dec, None, "pca").coords, stored.coords, atol=1e-6)

    full = os.environ.get("ATLAS_FULL_SNAPSHOT_CHECK") == "1"
    tokens = DEFAULT_HARVEST_TOKENS if full else 4096
    fresh = harvest(model, saes, corpus, HarvestSettings(max_tokens=tokens))
    for label, mine in fresh.saes.items():
        theirs = shipped.saes[label]
        assert mine.splice == theirs.splice, f"{REGENERATE} (splice quality of {label})"
        common = np.isin(theirs.l1_snapshot_tokens, mine.l1_snapshot_tokens)
        assert common.sum() >= 8
        assert np.array_equal(mine.l1_snapshots[np.isin(mine.l1_snapshot_tokens, theirs.l1_snapshot_tokens)],
                              theirs.l1_snapshots[common]), f"{REGENERATE} (L1 snapshots of {label})"
        if full:
            for name in SAE_ARRAYS:
                assert np.array_equal(getattr(mine, name), getattr(theirs, name)), f"{REGENERATE} ({label} {name})"
    if full:
        for site_name, site in fresh.sites.items():
            for name in SITE_ARRAYS:
                np.testing.assert_allclose(getattr(site, name), getattr(shipped.sites[site_name], name), rtol=1e-9,
                                           err_msg=REGENERATE)


@pytest.mark.slow
def test_shipped_snapshot_serves_the_organism_from_any_directory(tmp_path, fresh_seeding, monkeypatch):
    """Keys name the organism by content (core.sources.organism.organism_identity), not by its checkout's path:
    a fresh clone elsewhere finds the snapshot's harvest under the key it computes."""
    import shutil

    from core.harvest import HarvestSettings, harvest_key
    from core.organism.prebuild import DEFAULT_HARVEST_TOKENS, default_inputs
    from core.sources.organism import ORGANISM_DIR

    elsewhere = tmp_path / "clone" / "assets" / "organism"
    shutil.copytree(ORGANISM_DIR, elsewhere)
    monkeypatch.setenv("ATLAS_ORGANISM_DIR", str(elsewhere))
    seeded, shipped_keys = _seed_shipped(tmp_path)
    model, saes, corpus = default_inputs()
    assert model.card.origin == str(elsewhere)
    assert harvest_key(model, saes, corpus, HarvestSettings(max_tokens=DEFAULT_HARVEST_TOKENS)) in shipped_keys
