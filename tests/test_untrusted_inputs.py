"""Inputs a user hands Atlas, each an AtlasError with a message that says what to do: corpus shapes that
used to blow up memory, lone surrogates in prompts and corpora, device strings, CLI arguments."""

from __future__ import annotations

import json
import types

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core.sources.corpus as corpus_module
from core.device import DeviceError, check_device_name, pick_device
from core.errors import AtlasError, CorpusError, PromptError
from core.sources.corpus import CorpusSpec, load_corpus, pack_documents

SENTENCE = "the cat sat on the mat on monday "


class RecordingTokenizer:
    """The tiny model's tokenizer, recording how many characters each call is handed."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def __call__(self, texts, **kwargs):
        self.calls.append([len(t) for t in texts])
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def _recording(tiny_model):
    tokenizer = RecordingTokenizer(tiny_model.tokenizer)
    return types.SimpleNamespace(tokenizer=tokenizer, bos_token_id=tiny_model.bos_token_id,
                                 n_ctx=tiny_model.n_ctx), tokenizer


@pytest.mark.parametrize("shape", ["one line", "one paragraph of many lines", "jsonl, one record"])
def test_tokenization_stops_at_the_budget_whatever_the_document_shape(tiny_model, tmp_path, shape):
    """An 8 MiB document and a budget of 4 chunks of 8 tokens: at most one batch of pieces is tokenized
    (before: the whole 8 MiB in one tokenizer call, ~1 GB of RAM per 8 MiB with a BPE tokenizer)."""
    text = SENTENCE * (8 * 2**20 // len(SENTENCE))
    if shape == "one line":
        path = tmp_path / "big.txt"
        path.write_text(text)
    elif shape == "one paragraph of many lines":
        path = tmp_path / "big.txt"
        path.write_text(text.replace("monday ", "monday\n"))
    else:
        path = tmp_path / "big.jsonl"
        path.write_text(json.dumps({"text": text}) + "\n")
    model, tokenizer = _recording(tiny_model)
    corpus = load_corpus(CorpusSpec(source="file", path=str(path), context_size=8, max_chunks=4), model)
    assert corpus.tokens.shape == (4, 8) and corpus.truncated
    longest = max(max(call) for call in tokenizer.calls)
    handed = sum(sum(call) for call in tokenizer.calls)
    assert longest <= corpus_module.TOKENIZE_PIECE_CHARS
    assert handed <= corpus_module.TOKENIZE_BATCH_CHARS + corpus_module.TOKENIZE_PIECE_CHARS
    # cut at whitespace, the pieces give the tokens the whole text gives
    expected = pack_documents([text[:2000].replace("monday ", "monday\n") if "many" in shape else text[:2000]],
                              tiny_model, context_size=8, max_chunks=4)
    assert torch.equal(corpus.tokens, expected)


def test_pieces_join_to_the_document_and_short_documents_are_not_cut():
    long = ("word " * 10_000) + "x" * 40_000
    pieces = list(corpus_module._split(long, 16_384))
    assert "".join(pieces) == long and max(map(len, pieces)) <= 16_384
    assert all(p.startswith(" ") for p in pieces[1:3])      # cut before a space: " word" stays one token
    assert list(corpus_module._split("short text", 16_384)) == ["short text"]


def test_a_corpus_without_max_chunks_stops_at_the_token_limit(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module, "MAX_CORPUS_TOKENS", 80)
    path = tmp_path / "a.txt"
    path.write_text((SENTENCE + "\n\n") * 200)
    corpus = load_corpus(CorpusSpec(source="file", path=str(path), context_size=8), tiny_model)
    assert corpus.tokens.shape == (10, 8) and corpus.truncated and "token limit" in corpus.description


def test_a_lone_surrogate_in_a_jsonl_corpus_is_a_corpus_error(tiny_model, tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "the cat \\ud800 sat"}\n')
    with pytest.raises(CorpusError, match="line 1.*surrogate"):
        load_corpus(CorpusSpec(source="file", path=str(path), context_size=4), tiny_model)


@pytest.fixture(scope="module")
def probe_saes(tiny_sae_factory):
    from core.sources.saes import wrap_sae

    return [wrap_sae(tiny_sae_factory("topk", hook_name="blocks.0.hook_resid_post", seed=0))]


def test_a_lone_surrogate_in_a_prompt_is_a_prompt_error(tiny_model, probe_saes):
    from core.probe import probe_prompt

    with pytest.raises(PromptError, match="surrogate"):
        probe_prompt(tiny_model, probe_saes, "the cat \ud83d sat")


_PROMPTS = st.one_of(
    st.text(max_size=60),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=20), st.sampled_from(["\ud800", "\udfff", "\ud83d"]),
              st.text(max_size=20)),
    st.sampled_from(["", "   ", "\x00", "<script>alert(1)</script>", "the " * 400, "\u202e\u200b", "😀" * 10]),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(_PROMPTS)
def test_any_prompt_probes_or_is_a_prompt_error(tiny_model, probe_saes, prompt):
    from core.probe import probe_prompt

    try:
        result = probe_prompt(tiny_model, probe_saes, prompt)
    except PromptError:
        return
    assert len(result.str_tokens) >= 1


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cpu:1", "gpu", "cuda:1234", "", "auto", "CPU", "cuda:0"])
def test_device_names_are_checked(name):
    if name in ("tpu", "cuda:x", "cpu:1", "gpu", "cuda:1234"):
        with pytest.raises(DeviceError, match="Unknown device"):
            check_device_name(name)
    else:
        assert check_device_name(name) in ("auto", "cpu", "cuda:0")


def test_unavailable_devices_are_atlas_errors(monkeypatch):
    with pytest.raises(AtlasError, match="Unknown device 'tpu'"):
        pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(AtlasError, match="has 1 CUDA GPU"):
        pick_device("cuda:9")
    assert pick_device("cuda:0").index == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AtlasError, match="no CUDA GPU"):
        pick_device("cuda")


@pytest.mark.parametrize("arguments, needle", [
    (["--context-size", "0"], "--context-size"),
    (["--context-size", "1"], "--context-size"),
    (["--cooc-threshold", "inf"], "--cooc-threshold"),
    (["--cooc-threshold", "nan"], "--cooc-threshold"),
    (["--cooc-threshold", "-1"], "--cooc-threshold"),
    (["--seed", "99999999999999999999"], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--top-k", "1000000000"], "--top-k"),
    (["--batch-size", "0"], "--batch-size"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--device", "tpu"], "Unknown device 'tpu'"),
])
def test_cli_arguments_out_of_their_domain_exit_2_with_a_message(arguments, needle, capsys, tmp_path):
    from core.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["analyze", "--model", "organism", "--out", str(tmp_path / "o"), *arguments])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and needle in err and "Traceback" not in err
