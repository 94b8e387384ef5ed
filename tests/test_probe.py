"""Prompt probing on a tiny model with tiny SAEs: closed-form checks, bad prompts, HTML escaping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import PromptError
from core.figures.features import highlight_tokens_html, probe_heatmap
from core.probe import logit_lens_frame, probe_prompt, token_features_frame


@pytest.fixture(scope="module")
def tiny_saes(tiny_sae_factory):
    from core.sources.saes import wrap_sae

    return [wrap_sae(tiny_sae_factory("standard", hook_name=f"blocks.{layer}.hook_resid_post", seed=layer))
            for layer in (1, 0)]   # out of order on purpose: the probe sorts by layer


PROMPT = "the cat sat on the mat on monday"


def test_probe_matches_a_manual_forward_pass(tiny_model, tiny_saes):
    result = probe_prompt(tiny_model, tiny_saes, PROMPT, top_k=4)
    assert result.hook_names == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert result.str_tokens[0] == "<bos>" and len(result.str_tokens) == 9
    tokens = tiny_model.tokenize_prompt(PROMPT).tokens
    cache = tiny_model.run(tokens, result.hook_names, return_logits=True)
    for sae in tiny_saes:
        layer = result.layer(sae.hook_name)
        x = cache[sae.hook_name][0]
        z = sae.encode(x)
        np.testing.assert_allclose(layer.acts, z.numpy(), atol=1e-5)
        expected_error = ((x - sae.decode(z)).norm(dim=-1) / x.norm(dim=-1)).numpy()
        np.testing.assert_allclose(layer.recon_error, expected_error, rtol=1e-4)
        # top features are the largest activations, in order
        np.testing.assert_array_equal(layer.top_ids[:, 0], z.argmax(dim=-1).numpy())
        assert np.all(np.diff(layer.top_values, axis=1) <= 0)
        np.testing.assert_array_equal(layer.l0, (z > 0).sum(-1).numpy())
    # the logit lens after the last block is the model's own prediction
    np.testing.assert_array_equal(result.lens_top_ids[-1, :, 0], cache["logits"][0].argmax(-1).numpy())
    probs = torch.softmax(cache["logits"][0], -1).max(-1).values.numpy()
    np.testing.assert_allclose(result.lens_top_probs[-1, :, 0], probs, rtol=1e-4)


def test_frames_and_heatmap(tiny_model, tiny_saes):
    result = probe_prompt(tiny_model, tiny_saes, PROMPT, top_k=3)
    frame = token_features_frame(result, 2)
    assert set(frame["layer"]) <= {0, 1} and (frame["activation"] > 0).all()
    lens = logit_lens_frame(result, 2, tiny_model.to_str_tokens)
    assert list(lens["layer"]) == [0, 1] and "top 1" in lens.columns
    matrix = result.layer_matrix("recon_error")
    assert matrix.shape == (2, 9)
    fig = probe_heatmap(matrix, result.str_tokens, result.hook_names, "error")
    assert fig.data[0].z.shape == (2, 9)
    active = result.active_features("blocks.0.hook_resid_post")
    acts = result.layer("blocks.0.hook_resid_post").acts[1:]
    assert set(active) == set(np.flatnonzero(acts.max(0) > 0).tolist())


def test_empty_long_and_unknown_prompts(tiny_model, tiny_saes):
    for empty in ("", "   \n "):
        with pytest.raises(PromptError, match="empty"):
            probe_prompt(tiny_model, tiny_saes, empty)
    words = ("one two three four five " * 10).split()     # 50 words, context is 32 with BOS
    result = probe_prompt(tiny_model, tiny_saes, " ".join(words))
    assert len(result.str_tokens) == tiny_model.n_ctx
    assert result.n_truncated == 50 - (tiny_model.n_ctx - 1)
    assert result.truncated_text.split() == words[tiny_model.n_ctx - 1:]
    result = probe_prompt(tiny_model, tiny_saes, "the zebra sat")
    assert result.unknown_positions == [2]
    html = highlight_tokens_html(result.str_tokens, result.layer_matrix("recon_error")[0],
                                 unknown_positions=result.unknown_positions)
    assert html.count("UNK") == 1 and "dashed" in html


def test_token_html_escapes_every_token():
    tokens = ["<script>alert('x')</script>", '" onmouseover="evil()', "&amp;", "plain"]
    html = highlight_tokens_html(tokens, [1.0, 0.5, 0.0, 2.0])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'onmouseover="evil()' not in html           # cannot break out of the attribute either
    assert "&amp;amp;" in html                         # shown literally, not as an entity
    assert html.count("<span") == 4
    # opacity follows value / max
    assert "rgba(230,97,1,1.000)" in html and "rgba(230,97,1,0.250)" in html


def test_probe_of_a_prompt_with_html_is_escaped(tiny_model, tiny_saes):
    result = probe_prompt(tiny_model, tiny_saes, "the <script>alert(1)</script> cat")
    html = highlight_tokens_html(result.str_tokens, None)
    assert "<script" not in html and "&lt;" in html


def test_truncation_note_is_short_and_counts_what_was_cut(tiny_model, tiny_saes):
    words = ["monday"] * 20 + ["tuesday"] * 1800          # ~14k characters, far past the 32-token context
    result = probe_prompt(tiny_model, tiny_saes, " ".join(words))
    note = result.truncation_note(tiny_model.n_ctx)
    cut = len(words) - (tiny_model.n_ctx - 1)
    assert f"the last {cut:,} tokens" in note and f"({len(result.truncated_text):,} characters)" in note
    assert len(note) < 300 and note.count("tuesday") <= 12 and note.endswith("\u2026\u201d.")
    assert probe_prompt(tiny_model, tiny_saes, "monday").truncation_note(tiny_model.n_ctx) == ""


def test_l0_of_topk_saes_is_constant_and_l1_is_shown_instead(tiny_model, tiny_sae_factory):
    from core.sources.saes import wrap_sae

    topk = [wrap_sae(tiny_sae_factory("topk", hook_name=f"blocks.{layer}.hook_resid_post", seed=layer))
            for layer in (0, 1)]
    result = probe_prompt(tiny_model, topk, PROMPT)
    assert result.constant_l0() == 4                       # k = 4 in the test SAEs: one flat colour
    l1 = result.layer_matrix("l1")
    np.testing.assert_allclose(l1, np.stack([layer.acts.sum(1) for layer in result.layers]), rtol=1e-5)
    assert np.ptp(l1) > 0
    standard = [wrap_sae(tiny_sae_factory("standard", hook_name="blocks.0.hook_resid_post", seed=0))]
    assert probe_prompt(tiny_model, standard, PROMPT).constant_l0() is None


def test_feature_on_text_equals_the_probe(tiny_model, tiny_saes):
    from core.probe import feature_on_text

    sae = tiny_saes[0]
    result = probe_prompt(tiny_model, tiny_saes, PROMPT)
    feature = int(result.layer(sae.hook_name).top_ids[1, 0])
    tested = feature_on_text(tiny_model, sae, PROMPT, feature)
    assert tested.str_tokens == result.str_tokens
    np.testing.assert_allclose(tested.acts, result.layer(sae.hook_name).acts[:, feature], rtol=1e-5, atol=1e-6)
    with pytest.raises(PromptError, match="not in this SAE"):
        feature_on_text(tiny_model, sae, PROMPT, sae.d_sae)
    with pytest.raises(PromptError, match="empty"):
        feature_on_text(tiny_model, sae, "  ", 0)
