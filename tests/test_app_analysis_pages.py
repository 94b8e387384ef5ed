"""AppTest: the Geometry, Superposition and Spectra pages render on the (tiny) organism, and widgets
change what is shown."""

from __future__ import annotations

from pathlib import Path

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TIMEOUT = 300


def _app(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.session_state["harvest_tokens"] = 4000
    at.run()
    at.switch_page(f"../pages/{page}.py")
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _titles(at) -> list[str]:
    """Titles of every Plotly chart on the page."""
    import json

    return [json.loads(chart.proto.spec).get("layout", {}).get("title", {}).get("text", "") for chart in at.get("plotly_chart")]


def test_spectra_page_site_and_heatmap(app_env):
    at = _app("spectra")
    titles = _titles(at)
    assert any("Spectral profile" in t for t in titles)
    assert any("RankMe by layer and training checkpoint" in t for t in titles)
    assert any("Spectral phases" in t for t in titles)
    assert any("Small-d fit range" in i.value for i in at.info)
    sites = at.selectbox(key="spectra_site").options
    at.selectbox(key="spectra_site").set_value(sites[-1]).run()
    assert any(f"Eigenspectrum of {sites[-1]}" in t for t in _titles(at))
    at.selectbox(key="spectra_ckpt_metric").set_value("alpha-ReQ").run()
    assert not at.exception
    assert any("alpha-ReQ by layer and training checkpoint" in t for t in _titles(at))


def test_superposition_page_and_toy_lab(app_env):
    at = _app("superposition")
    titles = _titles(at)
    assert any("1/m" in t or "interference" in t.lower() for t in titles), titles
    before = len(at.get("plotly_chart"))
    at.slider(key="toy_n").set_value(4)
    at.slider(key="toy_m").set_value(2)
    at.button(key="toy_train").click().run()
    assert not at.exception, at.exception
    assert any(m.label.startswith("D*") for m in at.metric)
    assert len(at.get("plotly_chart")) == before + 2
    assert "n = 4, m = 2" in " ".join(m.value for m in at.markdown)


def test_geometry_page_tabs_and_toggles(app_env):
    at = _app("geometry")
    titles = _titles(at)
    assert any("Power-law exponent" in t for t in titles)
    assert any("circle strength per layer" in t for t in titles)
    assert any("Hierarchical orthogonality" in t for t in titles)
    assert any("held-out R^2" in t.lower() or "Held-out R^2" in t for t in titles)
    assert any("Analogy parallelograms (PCA)" in t for t in titles)
    at.toggle(key="geo_lda").set_value(True).run()
    assert not at.exception
    assert any("Analogy parallelograms (LDA directions)" in t for t in _titles(at))
    at.selectbox(key="geo_cycle").set_value("months").run()
    assert any(t.startswith("months: circle strength") for t in _titles(at))
    at.selectbox(key="geo_affinity").set_value("jaccard").run()
    assert not at.exception


def test_spectra_page_says_when_a_model_has_no_checkpoints(app_env, monkeypatch):
    from core import analysis

    monkeypatch.setattr(analysis, "checkpoint_options", lambda spec: {})
    at = _app("spectra")
    assert any("has no training checkpoints" in i.value for i in at.info)
    assert not any("by layer and training checkpoint" in t for t in _titles(at))


def test_spectra_page_transformer_lens_checkpoints_offline(app_env, monkeypatch, tiny_organism_dir):
    """The TransformerLens branch (Pythia's checkpoints), without network: the sidebar names
    pythia-70m-deduped, whose weights are stood in for by the tiny organism; a checkpoint download
    fails with OfflineError, which the page shows as an error (no crash, no heatmap)."""
    from core import analysis
    from core.errors import OfflineError
    from core.sources import models
    from core.sources.models import ModelSpec

    real_load = models.load_model
    message = "EleutherAI/pythia-70m-deduped is not in the Hugging Face cache and there is no network."

    def load_model(spec):
        if spec.source != "transformer_lens":
            return real_load(spec)
        if spec.checkpoint is not None:
            raise OfflineError(message)
        return real_load(ModelSpec(source="organism", path=str(tiny_organism_dir), device="cpu"))

    monkeypatch.setattr(models, "load_model", load_model)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.session_state["harvest_tokens"] = 4000
    at.session_state["model_source"] = "transformer_lens"
    at.session_state["tl_name"] = "pythia-70m-deduped"
    at.run()
    at.switch_page("../pages/spectra.py")
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["valid_sources"].model.name == "pythia-70m-deduped"

    options = analysis.checkpoint_options(ModelSpec(source="transformer_lens", name="pythia-70m-deduped"))
    picker = at.multiselect(key="spectra_tl_ckpts")
    assert len(options) > 100 and picker.value == analysis.default_checkpoints(options, 8)
    assert len(picker.value) == 8 and picker.value[0] == "0" and options[picker.value[-1]] == max(options.values())
    assert any("separate download of pythia-70m-deduped" in w.value for w in at.warning)
    assert not any("by layer and training checkpoint" in t for t in _titles(at))

    at.button(key="spectra_tl_run").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [message]
    assert not any("by layer and training checkpoint" in t for t in _titles(at))
