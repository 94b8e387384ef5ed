"""The session-state registry (app/registry.py) and what derives from it (app/state.py): session documents and
URLs are untrusted input, checked value by value against the widgets' domains."""

from __future__ import annotations

import pytest

from core.sessions import Session


def _session(settings=None, **fields) -> Session:
    document = {"title": "t", "settings": settings or {}, "created": "2026-01-02T03:04:05+00:00"}
    document.update(fields)
    return Session(**document)


def test_every_default_is_in_its_own_domain(app_env):
    from app.registry import KEYS, OPTIONS, REGISTRY

    assert len(KEYS) == len(REGISTRY)                     # one entry per name
    for name, choices in OPTIONS.items():
        assert KEYS[name].default in choices
    for key in REGISTRY:
        if key.check is not None:
            assert key.check(key.fresh_default()) == key.default, key.name


def test_a_saved_session_restores_to_the_same_values(app_env):
    from app.state import restore_values

    settings = {"ui_model_source": "organism", "ui_checkpoint": "final", "ui_sae_set": ["org:blocks.1.hook_resid_post"],
                "map_method": "UMAP", "color_by": "A feature", "position": 3, "search": "monday", "harvest_tokens": 4000}
    values, notices = restore_values(_session(settings, prompt="friday", selected_feature=5,
                                              selected_layer="blocks.1.hook_resid_post", page="features"))
    assert notices == []
    assert values["sae_set"] == ["org:blocks.1.hook_resid_post"] and values["map_method"] == "UMAP"
    assert (values["prompt"], values["feature"], values["layer"], values["page"]) == (
        "friday", 5, "blocks.1.hook_resid_post", "features")
    assert values["corpus_source"] == "world" and values["device"] == "auto"   # absent: the defaults


@pytest.mark.parametrize("settings, key, needle", [
    ({"ui_corpus_source": "file", "ui_corpus_path": "/etc/passwd"}, "corpus_file", "not a file uploaded to this Atlas"),
    ({"ui_corpus_source": "file", "ui_corpus_file": "../../etc/passwd.txt"}, "corpus_file", "not a file uploaded"),
    ({"map_method": "t-SNE"}, "map_method", "not one of the offered choices"),
    ({"color_by": ["A feature"]}, "color_by", "not one of the offered choices"),
    ({"harvest_tokens": 10**12}, "harvest_tokens", "outside"),
    ({"harvest_tokens": True}, "harvest_tokens", "not a whole number"),
    ({"position": -3}, "position", "outside"),
    ({"search": "x" * 201}, "search", "longer than 200"),
    ({"device": "cuda:7"}, "device", "not one of the offered choices"),
    ({"ui_model_source": "pickle"}, "model_source", "not one of the offered choices"),
    ({"ui_checkpoint": "step_999999999"}, "checkpoint", "not one of the offered choices"),
    ({"ui_tl_name": "../../etc"}, "tl_name", "expected form"),
    ({"ui_hf_dataset": "/etc"}, "hf_dataset", "not a Hugging Face dataset name"),
    ({"ui_hf_dataset": "docs"}, "hf_dataset", "path on the server"),
    ({"ui_hf_dir": "/etc"}, "hf_dir", "has not loaded"),
])
def test_hostile_settings_are_dropped_with_a_notice(app_env, monkeypatch, settings, key, needle):
    from app.registry import KEYS
    from app.state import restore_values

    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])   # "docs" exists here
    values, notices = restore_values(_session(settings))
    assert values[key] == KEYS[key].default
    assert any(needle in n for n in notices), notices
    assert all(len(n) < 400 for n in notices)           # a notice never repeats a long value
    if settings.get("ui_corpus_source") == "file":
        assert values["corpus_source"] == "world" and any("corpus source" in n for n in notices)


def test_lone_surrogates_and_bad_fields_are_refused(app_env):
    from app.state import restore_values

    values, notices = restore_values(_session(prompt="monday \ud800", selected_layer="blocks.1;rm -rf",
                                              page="features"))
    assert values["prompt"] == "on monday the king of france went to paris"
    assert values["layer"] is None and values["page"] == "features"
    assert any("prompt" in n and "lone surrogates" in n for n in notices)
    assert any("selected layer" in n for n in notices)


def test_an_sae_set_keeps_its_valid_entries(app_env):
    from app.state import restore_values

    refs = ["org:blocks.0.hook_resid_post", "org:blocks.9.hook_resid_post", "dir:0123456789ab", "rel:nope/x",
            "file:/etc/passwd"]
    values, notices = restore_values(_session({"ui_sae_set": refs}))
    assert values["sae_set"] == ["org:blocks.0.hook_resid_post"]
    assert any("4 of 5 entries were left out" in n for n in notices)


def test_legacy_documents_are_migrated(app_env):
    from app.state import restore_values
    from core.uploads import save_upload, uploads_dir

    name = save_upload(b"monday tuesday\n\nfriday\n", "c.txt")
    legacy = {"ui_sae_source": "organism", "ui_sae_hooks": ["blocks.1.hook_resid_post"], "ui_sae_dir": "",
              "ui_corpus_source": "file", "ui_corpus_path": str(uploads_dir() / name)}
    values, notices = restore_values(_session(legacy))
    assert notices == []
    assert values["sae_set"] == ["org:blocks.1.hook_resid_post"]
    assert values["corpus_source"] == "file" and values["corpus_file"] == name


def test_url_parameters_round_trip_and_stay_short(app_env, tmp_path):
    from app.registry import KEYS
    from app.state import url_params, values_from_url
    from core.known_dirs import KnownDirectories
    from core.uploads import save_upload

    defaults = {k.name: k.fresh_default() for k in KEYS.values()}
    assert url_params(defaults) == {}                               # the default view has a bare URL
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    KnownDirectories().remember("model", str(model_dir))
    name = save_upload(b"some text\n", "c.csv")
    chosen = {**defaults, "model_source": "hf_dir", "hf_dir": str(model_dir), "tl_name": "pythia-70m",
              "sae_set": ["org:blocks.1.hook_resid_post"],
              "corpus_source": "file", "corpus_file": name, "corpus_column": "body", "harvest_tokens": 5000}
    params = url_params(chosen)
    assert set(params) == {"model", "hf", "sae", "corpus", "file", "col", "tokens"}   # tl_name is not in use
    assert str(model_dir) not in str(params)                        # a directory travels as its id
    values, notices = values_from_url({k: v if isinstance(v, list) else [v] for k, v in params.items()})
    assert notices == []
    for key in ("model_source", "hf_dir", "corpus_source", "corpus_file", "corpus_column", "harvest_tokens"):
        assert values[key] == chosen[key], key
    assert values["sae_set"] == sorted(chosen["sae_set"])


@pytest.mark.parametrize("params, needle", [
    ({"file": ["/etc/passwd"]}, "not a file uploaded"),
    ({"hf": ["0123456789ab"], "model": ["hf_dir"]}, "has not loaded"),
    ({"hf": ["/etc"], "model": ["hf_dir"]}, "has not loaded"),
    ({"tokens": ["1e9"]}, "not a whole number"),
    ({"tokens": ["99999999999999999999999"]}, "not a whole number"),
    ({"sae": ["dir:0123456789ab"]}, "entries were left out"),
    ({"device": ["tpu"]}, "offered choices"),
])
def test_hostile_links_are_refused_with_a_notice(app_env, params, needle):
    from app.state import values_from_url

    values, notices = values_from_url(params)
    assert any(needle in n for n in notices), notices
    assert values.get("corpus_file", "") == "" and values.get("hf_dir", "") == ""
    assert values.get("model_source", "organism") == "organism"


def test_the_sae_set_is_a_set(app_env):
    from app.sources import request

    a = request({"model_source": "organism", "sae_set": ["org:blocks.1.hook_resid_post", "org:blocks.0.hook_resid_post"],
                 "corpus_source": "world"})
    b = request({"model_source": "organism", "sae_set": ["org:blocks.0.hook_resid_post", "org:blocks.1.hook_resid_post",
                                                         "org:blocks.0.hook_resid_post"], "corpus_source": "world"})
    assert a == b and len(a.saes) == 2


def test_release_references_are_checked_against_saelens_registry(app_env):
    from app.sources import check_sae_ref, sae_spec
    from core.inputs import InvalidValue
    from core.sources.saes import list_sae_ids

    release = "gpt2-small-res-jb"
    sae_id = list_sae_ids(release)[0]
    ref = check_sae_ref(f"rel:{release}/{sae_id}")
    assert sae_spec(ref).release == release and sae_spec(ref).sae_id == sae_id
    for bad in (f"rel:{release}/not-an-id", "rel:no-such-release/x", f"rel:{release}", "rel:../../x/y"):
        with pytest.raises(InvalidValue):
            check_sae_ref(bad)


def test_the_sidebar_offers_a_releases_sae_ids(app_env):
    """With a TransformerLens model, a browsed release's ids join the SAE list (loading them needs the hub;
    here only the offer is checked)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.sources.saes import list_sae_ids

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), default_timeout=300)
    at.session_state["model_source"] = "transformer_lens"
    at.session_state["tl_name"] = "gpt2"
    at.session_state["sae_set"] = []
    at.session_state["sae_release"] = "gpt2-small-res-jb"
    at.run()
    assert not at.exception
    offered = at.multiselect(key="sae_set").options
    assert {f"gpt2-small-res-jb \u00b7 {i}" for i in list_sae_ids("gpt2-small-res-jb")} <= set(offered)
    assert "gpt2-small-res-jb" in at.selectbox(key="sae_release").options


def test_a_changed_sae_set_says_it_harvests_only_the_new_sae(app_env, tmp_path):
    from app.resources import _harvest_label
    from core.harvest import HarvestSettings, harvest_cached
    from core.sources.corpus import CorpusSpec, load_corpus
    from core.sources.models import ModelSpec, load_model
    from core.sources.saes import load_sae, organism_sae_specs
    from core.store import ArtifactStore

    model = load_model(ModelSpec(source="organism", device="cpu"))
    saes = [load_sae(spec, model) for spec in organism_sae_specs()]
    corpus = load_corpus(CorpusSpec(source="world", context_size=32, max_chunks=40), model)
    settings, store = HarvestSettings(max_tokens=1000), ArtifactStore(tmp_path / "store")
    assert _harvest_label(model, saes, corpus, settings, store).startswith("Harvesting world corpus")
    harvest_cached(model, saes[:1], corpus, settings, store)
    assert "the 1 SAE(s) new to the store (1 reused)" in _harvest_label(model, saes, corpus, settings, store)
    harvest_cached(model, saes, corpus, settings, store)
    assert _harvest_label(model, saes[1:], corpus, settings, store).startswith("Assembling")
