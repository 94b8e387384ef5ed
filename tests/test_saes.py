"""core.sources.saes: one face over Standard/TopK/JumpReLU/Gated SAELens SAEs, the registry, fit checks."""

from __future__ import annotations

import pytest
import torch

from core.errors import SAEMismatchError, UnknownSAEError
from core.sources.corpus import CorpusSpec, corpus_spec_for_sae
from core.sources.models import ModelSpec, from_hooked_transformer
from core.sources.saes import (
    SAESpec,
    check_fit,
    list_releases,
    list_sae_ids,
    load_sae,
    organism_sae_specs,
    release_info,
    wrap_sae,
)
from tests.fixtures_models import D_MODEL, make_tiny_sae

ARCHITECTURES = ["standard", "topk", "jumprelu", "gated"]


def reference_encode(architecture: str, sae, x: torch.Tensor) -> torch.Tensor:
    """Each architecture's encoder written out from its paper, on the SAELens parameters."""
    sae_in = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
    if architecture == "gated":  # Rajamanoharan et al. 2024
        gate = (sae_in @ sae.W_enc + sae.b_gate) > 0
        magnitude = torch.relu(sae_in @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
        return gate * magnitude
    pre = sae_in @ sae.W_enc + sae.b_enc
    if architecture == "standard":
        return torch.relu(pre)
    if architecture == "jumprelu":  # Rajamanoharan et al. 2024b: z = pre * H(pre - threshold)
        return torch.relu(pre) * (pre > sae.threshold)
    values, indices = torch.relu(pre).topk(sae.cfg.k, dim=-1)  # Gao et al. 2024
    return torch.zeros_like(pre).scatter(-1, indices, values)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_uniform_face_matches_each_architectures_formula(architecture, tmp_path, tiny_model):
    raw = make_tiny_sae(architecture, hook_name="blocks.1.hook_resid_post", model_name="tiny")
    raw.save_model(str(tmp_path / architecture))
    sae = load_sae(SAESpec(source="dir", path=str(tmp_path / architecture)), tiny_model)
    assert sae.architecture == architecture and sae.hook_name == "blocks.1.hook_resid_post"
    assert (sae.d_in, sae.d_sae) == (D_MODEL, 48)
    assert sae.W_enc.shape == (D_MODEL, 48) and sae.W_dec.shape == (48, D_MODEL)
    assert sae.b_enc.shape == (48,) and sae.b_dec.shape == (D_MODEL,)
    for name in ["W_enc", "W_dec", "b_dec"]:
        torch.testing.assert_close(getattr(sae, name), getattr(raw, name).detach())
    x = torch.randn(6, 5, D_MODEL, generator=torch.Generator().manual_seed(1))
    z = sae.encode(x)
    with torch.no_grad():
        expected = reference_encode(architecture, raw, x)
    torch.testing.assert_close(z, expected, atol=1e-5, rtol=1e-5)
    assert 0 < (z > 0).float().mean() < 1  # features fire, not all of them
    torch.testing.assert_close(sae.decode(z), z @ sae.W_dec + sae.b_dec, atol=1e-5, rtol=1e-5)
    if architecture == "topk":
        assert ((z > 0).sum(-1) <= raw.cfg.k).all()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_fast_encode_equals_saelens_encode(architecture, apply_b_dec):
    """The plain-torch encoder equals SAELens's own encode, dense and sparse, for every architecture."""
    raw = make_tiny_sae(architecture, seed=3)
    raw.cfg.apply_b_dec_to_input = apply_b_dec
    with torch.no_grad():  # a non-zero b_dec, so that apply_b_dec_to_input matters
        raw.b_dec.copy_(torch.randn_like(raw.b_dec) * 0.5)
        if architecture == "jumprelu":
            raw.threshold.copy_(torch.rand_like(raw.threshold) * 0.3)
    sae = wrap_sae(raw)
    x = torch.randn(40, D_MODEL, generator=torch.Generator().manual_seed(4))
    z = sae.encode(x)
    assert sae.fast_encode_available() is True  # verified against SAELens on the first input
    with torch.no_grad():
        expected = raw.encode(x)
    torch.testing.assert_close(z, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sae.encode(x.reshape(5, 8, D_MODEL)), expected.reshape(5, 8, -1), atol=1e-6, rtol=1e-6)
    rows, feats, vals = sae.encode_sparse(x)
    ref_rows, ref_feats = (expected > 0).nonzero(as_tuple=True)
    assert torch.equal(rows, ref_rows) and torch.equal(feats, ref_feats)  # row-major, like nonzero()
    torch.testing.assert_close(vals, expected[ref_rows, ref_feats], atol=1e-6, rtol=1e-6)
    assert 0 < rows.numel() < expected.numel()


def test_fast_encode_steps_aside_for_hooks_and_normalisation():
    """A hook on the SAE, or a run-time normalisation, sends encode back through SAELens."""
    raw = make_tiny_sae("topk", seed=5)
    sae = wrap_sae(raw)
    x = torch.randn(12, D_MODEL, generator=torch.Generator().manual_seed(6))
    baseline = sae.encode(x)
    assert sae.fast_encode_available()
    handle = raw.hook_sae_acts_post.register_forward_hook(lambda module, inputs, output: output * 2)
    try:
        assert not sae.fast_encode_available()
        torch.testing.assert_close(sae.encode(x), baseline * 2)  # the hook ran: SAELens's path was taken
        rows, feats, vals = sae.encode_sparse(x)
        torch.testing.assert_close(vals, baseline[rows, feats] * 2)
    finally:
        handle.remove()
    assert sae.fast_encode_available()
    normed = make_tiny_sae("standard", seed=7)
    normed.cfg.normalize_activations = "layer_norm"
    normed._setup_activation_normalization()
    wrapped = wrap_sae(normed)
    with torch.no_grad():
        torch.testing.assert_close(wrapped.encode(x), normed.encode(x))
    assert not wrapped.fast_encode_available(x)


def test_dir_errors(tmp_path):
    with pytest.raises(UnknownSAEError, match="cfg.json"):
        load_sae(SAESpec(source="dir", path=str(tmp_path)), device="cpu")
    (tmp_path / "cfg.json").write_text("{not json")
    (tmp_path / "sae_weights.safetensors").write_bytes(b"junk")
    with pytest.raises(UnknownSAEError, match="could not read"):
        load_sae(SAESpec(source="dir", path=str(tmp_path)), device="cpu")
    with pytest.raises(UnknownSAEError, match="source"):
        load_sae(SAESpec(source="zip"), device="cpu")


def test_fit_check_rejects_wrong_hook_width_and_model(tiny_model):
    with pytest.raises(SAEMismatchError, match="blocks.5.hook_resid_post"):
        check_fit(wrap_sae(make_tiny_sae(hook_name="blocks.5.hook_resid_post", model_name="tiny")), tiny_model)
    with pytest.raises(SAEMismatchError, match="width 32"):
        check_fit(wrap_sae(make_tiny_sae(d_in=32, model_name="tiny")), tiny_model)
    with pytest.raises(SAEMismatchError, match="pythia-70m"):
        check_fit(wrap_sae(make_tiny_sae(model_name="pythia-70m")), tiny_model)
    assert check_fit(wrap_sae(make_tiny_sae(model_name="tiny")), tiny_model) == []


def test_fit_check_only_warns_for_an_alias_of_the_model_name(tiny_hooked):
    as_gpt2 = from_hooked_transformer(tiny_hooked, ModelSpec(source="transformer_lens", name="gpt2"))
    warnings = check_fit(wrap_sae(make_tiny_sae(model_name="gpt2-small")), as_gpt2)
    assert len(warnings) == 1 and "gpt2-small" in warnings[0]
    assert check_fit(wrap_sae(make_tiny_sae(model_name="gpt2")), as_gpt2) == []


def test_registry_lists_releases_and_ids_for_a_model():
    for name in ["gpt2", "gpt2-small"]:
        assert "gpt2-small-res-jb" in list_releases(name)
    assert "gpt2-small-res-jb" not in list_releases("pythia-70m-deduped")
    ids = list_sae_ids("gpt2-small-res-jb")
    assert ids[0] == "blocks.0.hook_resid_pre" and "blocks.11.hook_resid_post" in ids
    info = release_info("gpt2-small-res-jb")
    assert info["repo_id"] == "jbloom/GPT2-Small-SAEs-Reformatted" and info["model"] == "gpt2-small"
    assert len(list_releases()) > 50


def test_unknown_release_or_id_is_caught_before_any_download():
    with pytest.raises(UnknownSAEError, match="gpt2-small-res-jb"):
        load_sae(SAESpec(source="release", release="gpt2-small-res-j", sae_id="x"), device="cpu")
    with pytest.raises(UnknownSAEError, match="blocks.0.hook_resid_pre"):
        load_sae(SAESpec(source="release", release="gpt2-small-res-jb", sae_id="blocks.0.hook_resid_pr"),
                 device="cpu")
    with pytest.raises(UnknownSAEError):
        list_sae_ids("no-such-release")


def test_metadata_drives_the_corpus_spec():
    sae = wrap_sae(make_tiny_sae(prepend_bos=False, context_size=8))
    assert sae.prepend_bos is False and sae.context_size == 8
    spec = corpus_spec_for_sae(sae, CorpusSpec(context_size=64, max_chunks=3))
    assert (spec.prepend_bos, spec.context_size, spec.max_chunks) == (False, 8, 3)
    unknown = wrap_sae(make_tiny_sae())
    assert corpus_spec_for_sae(unknown, CorpusSpec(context_size=12)).context_size == 12


def test_organism_saes(fake_organism, tiny_model):
    specs = organism_sae_specs()
    assert [s.hook_name for s in specs] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    organism_model = from_hooked_transformer(tiny_model.model, ModelSpec(source="organism"))
    sae = load_sae(specs[1], organism_model)
    assert sae.architecture == "topk" and sae.hook_name == "blocks.1.hook_resid_post" and sae.fit_warnings == []
    with pytest.raises(UnknownSAEError, match="blocks.0.hook_resid_post"):
        load_sae(SAESpec(source="organism", hook_name="blocks.0.hook_mlp_out"), organism_model)


def test_real_organism_model_saes_and_world_fit_together(tiny_organism_dir):
    """The real organism module end to end: every SAE fits its model, the world corpus packs, encode runs."""
    directory = tiny_organism_dir
    from core.sources.corpus import load_corpus
    from core.sources.models import load_model

    model = load_model(ModelSpec(source="organism", path=str(directory), device="cpu"))
    specs = organism_sae_specs(directory)
    assert specs, "the tiny organism has SAEs"
    saes = [load_sae(spec, model) for spec in specs]
    assert all(s.fit_warnings == [] for s in saes)
    corpus = load_corpus(
        corpus_spec_for_sae(saes[0], CorpusSpec(source="world", path=str(directory), split="eval",
                                                context_size=16, max_chunks=4)),
        model,
    )
    assert corpus.tokens.shape[0] == 4
    acts = model.run(corpus.tokens, [s.hook_name for s in saes])
    for sae in saes:
        z = sae.encode(acts[sae.hook_name])
        assert z.shape == (*corpus.tokens.shape, sae.d_sae) and (z > 0).any()
