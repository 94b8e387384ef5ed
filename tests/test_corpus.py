"""core.sources.corpus: reading .txt/.jsonl/.csv/world/datasets and packing into BOS-led chunks."""

from __future__ import annotations

import json

import pytest
import torch

import core.sources.corpus as corpus_module
from core.errors import CorpusError, OfflineError
from core.sources.corpus import CorpusSpec, load_corpus, pack_documents
from tests.fixtures_models import tiny_vocab

V = tiny_vocab()
BOS = V["<bos>"]


def ids(text: str) -> list[int]:
    return [V[w] for w in text.split()]


def test_packing_known_answer(tiny_model):
    docs = ["the cat", "a dog ran", "monday is a day"]
    chunks = pack_documents(docs, tiny_model, context_size=4, prepend_bos=True)
    # stream: the cat | a dog ran | monday is a day, separated by BOS; 3 stream tokens per chunk
    stream = ids("the cat") + [BOS] + ids("a dog ran") + [BOS] + ids("monday is a day")
    expected = [[BOS, *stream[i : i + 3]] for i in range(0, len(stream) - 2, 3)]
    assert chunks.tolist() == expected and chunks.dtype == torch.long
    no_bos = pack_documents(docs, tiny_model, context_size=4, prepend_bos=False)
    assert len(stream) == 11  # two full chunks of 4; the partial third is dropped
    assert no_bos.tolist() == [stream[0:4], stream[4:8]]  # EOS (= <bos> here) separates
    assert pack_documents(docs, tiny_model, context_size=4, max_chunks=2).tolist() == expected[:2]


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_txt_documents_are_blank_line_paragraphs(tmp_path, tiny_model):
    path = write(tmp_path / "a.txt", "the cat sat\non the mat\n\n\nmonday is a day\n\nthe king and the queen\n")
    corpus = load_corpus(CorpusSpec(source="file", path=path, context_size=4), tiny_model)
    assert corpus.n_documents == 3
    stream = ids("the cat sat on the mat") + [BOS] + ids("monday is a day") + [BOS] + ids("the king and the queen")
    assert corpus.tokens.tolist() == [[BOS, *stream[i : i + 3]] for i in range(0, len(stream) - 2, 3)]
    assert "3 documents" in corpus.description and corpus.truncated is False


def test_jsonl_and_csv_columns(tmp_path, tiny_model):
    rows = [{"id": 1, "body": "the cat sat on the mat"}, {"id": 2, "body": "a dog ran"}]
    jsonl = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    corpus = load_corpus(CorpusSpec(source="file", path=jsonl, column="body", context_size=4), tiny_model)
    assert corpus.n_documents == 2 and corpus.tokens[0].tolist() == [BOS, *ids("the cat sat")]
    with pytest.raises(CorpusError, match="Its fields: id, body"):
        load_corpus(CorpusSpec(source="file", path=jsonl, context_size=4), tiny_model)
    csv_path = write(tmp_path / "d.csv", 'id,body\n1,"the cat sat on the mat"\n2,"a dog ran"\n')
    corpus = load_corpus(CorpusSpec(source="file", path=csv_path, column="body", context_size=4), tiny_model)
    assert corpus.n_documents == 2 and corpus.tokens[0].tolist() == [BOS, *ids("the cat sat")]
    with pytest.raises(CorpusError, match="Its columns: id, body"):
        load_corpus(CorpusSpec(source="file", path=csv_path, column="text", context_size=4), tiny_model)
    single = write(tmp_path / "s.csv", "sentence\nthe cat sat on the mat\n")
    assert load_corpus(CorpusSpec(source="file", path=single, context_size=4), tiny_model).n_documents == 1
    assert corpus_module.list_columns(csv_path) == ["id", "body"]
    assert corpus_module.list_columns(jsonl) == ["id", "body"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("e.txt", "", "empty"),
        ("w.txt", "\n\n   \n", "no text"),
        ("b.txt", b"\x00\x01binary", "binary"),
        ("l.txt", b"caf\xe9 latin-1", "UTF-8"),
        ("bad.jsonl", '{"text": "the cat"}\n{oops\n', "Line 2"),
        ("short.txt", "the cat", "shorter than one chunk"),
        ("x.pdf", "the cat", ".txt, .jsonl or .csv"),
    ],
)
def test_unreadable_or_empty_files_are_corpus_errors(tmp_path, tiny_model, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(CorpusError, match=message):
        load_corpus(CorpusSpec(source="file", path=path, context_size=4), tiny_model)


def test_missing_file_is_a_corpus_error(tmp_path, tiny_model):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(CorpusSpec(source="file", path=str(tmp_path / "nope.txt")), tiny_model)


def test_size_cap_stops_reading_and_says_so(tmp_path, tiny_model, monkeypatch):
    paragraph = "the cat sat on the mat\n\n"
    path = write(tmp_path / "big.txt", paragraph * 100)
    monkeypatch.setattr(corpus_module, "MAX_FILE_BYTES", len(paragraph.encode()) * 10)
    corpus = load_corpus(CorpusSpec(source="file", path=path, context_size=4), tiny_model)
    assert corpus.truncated and "MiB" in corpus.description
    assert corpus.n_documents == 10  # only what fits under the cap was read


def test_context_is_clamped_to_the_model(tmp_path, tiny_model):
    path = write(tmp_path / "long.txt", "one two three four five " * 40)
    corpus = load_corpus(CorpusSpec(source="file", path=path, context_size=10_000), tiny_model)
    assert corpus.tokens.shape[1] == tiny_model.n_ctx and "lowered" in corpus.description
    capped = load_corpus(CorpusSpec(source="file", path=path, context_size=8, max_chunks=3), tiny_model)
    assert capped.tokens.shape == (3, 8) and capped.truncated


def test_world_corpus(fake_organism, tiny_model):
    corpus = load_corpus(CorpusSpec(source="world", split="eval", context_size=8), tiny_model)
    assert corpus.n_documents == 20 and (corpus.tokens[:, 0] == BOS).all()
    assert V["<unk>"] not in corpus.tokens.tolist()[0]


def test_hf_dataset_offline_is_an_offline_error(tiny_model):
    with pytest.raises(OfflineError, match="atlas-test/no-such-dataset"):
        load_corpus(CorpusSpec(source="hf_dataset", name="atlas-test/no-such-dataset"), tiny_model)


def test_hf_dataset_from_a_local_folder(tmp_path, tiny_model):
    """datasets.load_dataset on a local data folder: the same call as a hub name, without the hub."""
    folder = tmp_path / "ds"
    folder.mkdir()
    write(folder / "train.jsonl", "\n".join(json.dumps({"text": "the cat sat on the mat"}) for _ in range(5)))
    corpus = load_corpus(
        CorpusSpec(source="hf_dataset", name=str(folder), split="train", context_size=4), tiny_model
    )
    assert corpus.n_documents == 5 and corpus.tokens[0].tolist() == [BOS, *ids("the cat sat")]
    with pytest.raises(CorpusError, match="Its columns: text"):
        load_corpus(CorpusSpec(source="hf_dataset", name=str(folder), column="body"), tiny_model)
