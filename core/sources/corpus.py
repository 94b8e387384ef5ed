"""Corpora: text from the organism's world, an uploaded file or a Hugging Face dataset, packed into
fixed-length chunks of token ids for the harvest.

Sources (CorpusSpec.source):
- "world": the embedded organism's synthetic world corpus (`split`, `path` for another organism dir);
- "file": a .txt, .jsonl or .csv file (`path`; `column` for .jsonl/.csv, default "text", or the only
  column of a one-column .csv):
    .txt   one document per paragraph: documents are separated by blank lines; the lines of one
           paragraph stay one document (so a file with one sentence per line and no blank lines is
           one long document, which packing treats the same as many short ones);
    .jsonl one JSON object per line, text in `column` (a line may also be a bare JSON string);
    .csv   a header row, text in `column`;
  files are read as a stream (a .txt line longer than READ_PIECE_BYTES in pieces) and reading stops
  after MAX_FILE_BYTES (the corpus says so in its description), so a huge upload costs bounded memory
  and time;
- "hf_dataset": `datasets.load_dataset(name, split=split, streaming=True)` when the hub is usable,
  else from the local datasets cache; offline without a cached copy is an OfflineError at once.

Packing follows SAELens's convention (TokenizeAndConcatenate): documents are tokenized without
special tokens and concatenated into one stream with a separator token between documents (BOS when
prepend_bos, else EOS when the tokenizer has one); the stream is cut into chunks of context_size
tokens, each chunk starting with BOS when prepend_bos (then it holds context_size - 1 stream tokens).
The last partial chunk is dropped. `max_chunks` stops reading as soon as enough chunks exist; without it
the corpus stops at MAX_CORPUS_TOKENS tokens.

Memory is bounded by these settings, not by the shape of the input: a document longer than
TOKENIZE_PIECE_CHARS characters is tokenized in pieces (cut just before a whitespace where there is one
in the piece's second half, else hard), a tokenizer call gets at most TOKENIZE_BATCH pieces and about
TOKENIZE_BATCH_CHARS characters, packing stops as soon as the budget is met, and a .txt paragraph is never
held whole. Tokens can differ from whole-document tokenization only at those cuts; documents
shorter than a piece (every normal corpus, the world corpus included) are tokenized exactly as before.
When the caller has an SAE, `corpus_spec_for_sae` takes prepend_bos and context_size from the SAE's
training metadata so the activations match what the SAE was trained on.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import CorpusError, OfflineError
from core.sources.faces import CorpusSource
from core.text import check_unicode

SOURCES = ("world", "file", "hf_dataset")
FILE_KINDS = (".txt", ".jsonl", ".csv")
MAX_FILE_BYTES = 256 * 1024 * 1024  # read at most this much of an uploaded file
MAX_CORPUS_TOKENS = 1 << 25  # tokens of a corpus without max_chunks (33.5M: 268 MB as int64)
TOKENIZE_BATCH = 256  # pieces per tokenizer call
TOKENIZE_PIECE_CHARS = 16_384  # a longer document is tokenized in pieces of at most this many characters
TOKENIZE_BATCH_CHARS = 1 << 18  # characters per tokenizer call (about; 256 short documents fit)
READ_PIECE_BYTES = 1 << 20  # a longer .txt line is read in pieces


@dataclass(frozen=True)
class CorpusSpec:
    source: CorpusSource = "world"
    path: str | None = None
    column: str | None = None
    name: str | None = None
    split: str = "train"
    context_size: int = 64
    max_chunks: int | None = None
    prepend_bos: bool = True


@dataclass(frozen=True)
class Corpus:
    spec: CorpusSpec
    tokens: torch.Tensor  # [n_chunks, context_size], long, CPU
    description: str
    n_documents: int = 0
    truncated: bool = False  # stopped early: max_chunks reached or the file size cap hit

    @property
    def n_chunks(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())


def corpus_spec_for_sae(sae: Any, base_spec: CorpusSpec) -> CorpusSpec:
    """`base_spec` with prepend_bos and context_size taken from the SAE's metadata where it has them."""
    changes: dict[str, Any] = {}
    if getattr(sae, "prepend_bos", None) is not None:
        changes["prepend_bos"] = bool(sae.prepend_bos)
    if getattr(sae, "context_size", None):
        changes["context_size"] = int(sae.context_size)
    return replace(base_spec, **changes)


def load_corpus(spec: CorpusSpec, model: Any) -> Corpus:
    """Read, tokenize with `model`'s tokenizer and pack the corpus `spec` describes.

    A context_size above the model's n_ctx is lowered to n_ctx (the description says so).
    """
    if spec.source not in SOURCES:
        raise CorpusError(f"Unknown corpus source {spec.source!r}; choose one of {', '.join(SOURCES)}.")
    if spec.context_size < 2:
        raise CorpusError(f"A context size of {spec.context_size} is too small; use at least 2 tokens.")
    if spec.max_chunks is not None and spec.max_chunks < 1:
        raise CorpusError("max_chunks must be at least 1 (or empty for no limit).")
    notes = []
    context_size = spec.context_size
    if context_size > model.n_ctx:
        notes.append(f"context lowered from {context_size} to the model's {model.n_ctx}")
        context_size = model.n_ctx
    capped = _Flag()
    documents: Iterator[str | Segment]
    if spec.source == "world":
        documents, label = _world_documents(spec), f"world corpus ({spec.split})"
    elif spec.source == "file":
        documents, label = file_documents(spec, capped), f"file {Path(spec.path or '').name}"
    else:
        documents, label = _hf_documents(spec), f"dataset {spec.name} ({spec.split})"
    counter = _Counter(documents)
    tokens, hit_budget = _pack(counter, model, context_size=context_size, prepend_bos=spec.prepend_bos,
                               max_chunks=spec.max_chunks)
    if counter.n == 0:
        raise CorpusError(f"The {label} holds no text.")
    if tokens.shape[0] == 0:
        raise CorpusError(
            f"The {label} is shorter than one chunk of {context_size} tokens; "
            "give more text or a smaller context size."
        )
    hit_max = spec.max_chunks is not None and tokens.shape[0] >= spec.max_chunks
    if capped.value:
        notes.append(f"read only the first {MAX_FILE_BYTES // 2**20} MiB")
    if hit_max:
        notes.append(f"stopped at max_chunks={spec.max_chunks}")
    elif hit_budget:
        notes.append(f"stopped at the {MAX_CORPUS_TOKENS:,}-token limit")
        hit_max = True
    bos = "BOS first" if spec.prepend_bos else "no BOS"
    description = (
        f"{label}: {counter.n} documents, {tokens.shape[0]} chunks x {context_size} tokens, {bos}"
        + (f" ({'; '.join(notes)})" if notes else "")
    )
    return Corpus(
        replace(spec, context_size=context_size), tokens, description, counter.n, capped.value or hit_max
    )


def pack_documents(
    documents: Iterable[str],
    model: Any,
    context_size: int,
    prepend_bos: bool = True,
    max_chunks: int | None = None,
) -> torch.Tensor:
    """Tokenize and pack documents into [n_chunks, context_size] (see the module docstring)."""
    return _pack(documents, model, context_size=context_size, prepend_bos=prepend_bos, max_chunks=max_chunks)[0]


Segment = tuple[bool, str]  # (starts a document, text): a document may come in several segments


def _pack(documents: Iterable[str | Segment], model: Any, *, context_size: int, prepend_bos: bool,
          max_chunks: int | None) -> tuple[torch.Tensor, bool]:
    """(chunks [n, context_size], whether MAX_CORPUS_TOKENS stopped it). `documents` yields strings (one
    document each) or Segments; everything is tokenized in bounded pieces and stops at the budget."""
    tokenizer = model.tokenizer
    bos = model.bos_token_id if prepend_bos else None
    if prepend_bos and bos is None:
        raise CorpusError("The model's tokenizer has no BOS token; turn off 'prepend BOS'.")
    separator = bos if prepend_bos else getattr(tokenizer, "eos_token_id", None)
    body = context_size - 1 if prepend_bos else context_size
    budget = MAX_CORPUS_TOKENS // context_size
    limit = min(max_chunks, budget) if max_chunks is not None else budget
    rows = np.zeros((min(limit, 1024), context_size), dtype=np.int64)
    n_rows = 0
    stream: list[int] = []
    started = separate = False
    pieces = _pieces(documents)
    while n_rows < limit:
        batch = _take(pieces, TOKENIZE_BATCH_CHARS)
        if not batch:
            break
        encoded = tokenizer([text for _, text in batch], add_special_tokens=False)["input_ids"]
        for (starts, _), ids in zip(batch, encoded):
            if starts:
                separate = started
            if not ids:
                continue
            if separate and separator is not None:
                stream.append(int(separator))
            started, separate = True, False
            stream.extend(ids)
            # Read through the stream by offset and drop the consumed prefix once per piece:
            # slicing off the rest per chunk would copy it every time.
            start = 0
            while len(stream) - start >= body and n_rows < limit:
                if n_rows == len(rows):
                    rows = np.concatenate([rows, np.zeros_like(rows)])[: max(limit, 1)]
                piece = stream[start: start + body]
                rows[n_rows] = [bos, *piece] if bos is not None else piece  # bos is set iff prepend_bos
                n_rows += 1
                start += body
            del stream[:start]
            if n_rows >= limit:
                break
    hit_budget = n_rows >= budget and (max_chunks is None or max_chunks > budget)
    return torch.from_numpy(np.ascontiguousarray(rows[:n_rows])), hit_budget


def _pieces(documents: Iterable[str | Segment]) -> Iterator[Segment]:
    """Segments of at most TOKENIZE_PIECE_CHARS characters (the module docstring says where they are cut)."""
    for item in documents:
        starts, text = (True, item) if isinstance(item, str) else item
        for piece in _split(text, TOKENIZE_PIECE_CHARS):
            yield starts, piece
            starts = False


def _split(text: str, limit: int) -> Iterator[str]:
    start, n = 0, len(text)
    while n - start > limit:
        end = start + limit
        cut = max(text.rfind(" ", start + limit // 2, end), text.rfind("\n", start + limit // 2, end))
        cut = cut if cut > start else end
        yield text[start:cut]
        start = cut
    if start < n or n == 0:
        yield text[start:]


def _take(pieces: Iterator[Segment], max_chars: int) -> list[Segment]:
    """The next pieces, up to TOKENIZE_BATCH of them and about `max_chars` characters."""
    batch, chars = [], 0
    for segment in pieces:
        batch.append(segment)
        chars += len(segment[1])
        if len(batch) >= TOKENIZE_BATCH or chars >= max_chars:
            break
    return batch


# ---- sources -----------------------------------------------------------------------------------
def _world_documents(spec: CorpusSpec) -> Iterator[str]:
    from core.sources import organism

    directory = organism.resolve_dir(spec.path)
    try:
        texts = organism.world_corpus_texts(directory, split=spec.split)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise CorpusError(f"The world corpus has no split {spec.split!r} in {str(directory)!r} ({error}).") from error
    return iter(texts)


def file_documents(spec: CorpusSpec, capped: _Flag | None = None) -> Iterator[str | Segment]:
    """Documents of an uploaded file (strings, or Segments for .txt paragraphs), streamed; raises CorpusError for what cannot be read."""
    if not spec.path:
        raise CorpusError("Choose a .txt, .jsonl or .csv file.")
    path = Path(spec.path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FILE_KINDS:
        raise CorpusError(f"{path.name!r} is not a .txt, .jsonl or .csv file.")
    if not path.is_file():
        raise CorpusError(f"The file {str(path)!r} does not exist.")
    if path.stat().st_size == 0:
        raise CorpusError(f"The file {path.name!r} is empty.")
    capped = capped or _Flag()
    if suffix == ".txt":
        return _paragraphs(_read_line_pieces(path, capped))
    lines = _read_lines(path, capped)
    if suffix == ".jsonl":
        return _jsonl_texts(lines, spec.column, path.name)
    return _csv_texts(lines, spec.column, path.name)


def _read_lines(path: Path, capped: _Flag) -> Iterator[str]:
    """Lines of a UTF-8 text file, stopping after MAX_FILE_BYTES; binary or non-UTF-8 -> CorpusError."""
    read = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            read += len(raw)
            if read > MAX_FILE_BYTES:
                capped.value = True
                return
            if b"\x00" in raw:
                raise CorpusError(f"{path.name!r} looks like a binary file, not text.")
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(f"{path.name!r} is not UTF-8 text (line {number}).") from error


def _read_line_pieces(path: Path, capped: _Flag) -> Iterator[tuple[str, bool]]:
    """(text, ends a line) pieces of a UTF-8 file, at most READ_PIECE_BYTES each, stopping after
    MAX_FILE_BYTES; binary or non-UTF-8 -> CorpusError."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    read, line = 0, 1
    with open(path, "rb") as handle:
        while raw := handle.readline(READ_PIECE_BYTES):
            read += len(raw)
            if read > MAX_FILE_BYTES:
                capped.value = True
                return
            if b"\x00" in raw:
                raise CorpusError(f"{path.name!r} looks like a binary file, not text.")
            try:
                text = decoder.decode(raw)
            except UnicodeDecodeError as error:
                raise CorpusError(f"{path.name!r} is not UTF-8 text (line {line}).") from error
            if read == len(raw) and text.startswith("\ufeff"):
                text = text[1:]  # a byte-order mark at the start of the file
            ends = raw.endswith(b"\n")
            line += ends
            yield text, ends
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path.name!r} is not UTF-8 text (it ends inside a character).") from error


def _paragraphs(pieces: Iterable[tuple[str, bool]]) -> Iterator[Segment]:
    """Blank-line separated paragraphs (their lines joined by "\n") as Segments, never held whole: a
    paragraph's text is handed on in pieces once more than two pieces' worth has gathered."""
    parts: list[str] = []
    size = 0
    starts = True          # the next segment begins a document
    in_paragraph = False
    held: list[str] = []   # whitespace at the start of the current line: kept if text follows on that line
    line_has_text = False

    def flush(final: bool) -> Iterator[Segment]:
        nonlocal parts, size, starts
        pieces_ = list(_split("".join(parts), TOKENIZE_PIECE_CHARS))
        keep = [] if final else [pieces_.pop()]
        for piece in pieces_:
            yield starts, piece
            starts = False
        parts, size = keep, sum(map(len, keep))

    for piece, ends_line in pieces:
        text = piece.rstrip("\r\n") if ends_line else piece
        if line_has_text:
            parts.append(text)
            size += len(text)
        elif text.strip():
            if in_paragraph:
                parts.append("\n")
            parts.extend(held)
            parts.append(text)
            size += 1 + sum(map(len, held)) + len(text)
            held, in_paragraph, line_has_text = [], True, True
        else:
            held.append(text)
        if ends_line:
            if not line_has_text and in_paragraph:  # a blank line ends the paragraph
                yield from flush(final=True)
                starts, in_paragraph = True, False
            held, line_has_text = [], False
        if size > 2 * TOKENIZE_PIECE_CHARS:
            yield from flush(final=False)
    if in_paragraph:
        yield from flush(final=True)


def _jsonl_texts(lines: Iterable[str], column: str | None, filename: str) -> Iterator[str]:
    key = column or "text"
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(f"Line {number} of {filename!r} is not valid JSON ({error.msg}).") from error
        if isinstance(record, str):
            text = record
        elif isinstance(record, dict):
            if key not in record:
                raise CorpusError(
                    f"Line {number} of {filename!r} has no field {key!r}. "
                    f"Its fields: {', '.join(map(str, record)) or 'none'}. Choose the text column."
                )
            text = record[key]
        else:
            raise CorpusError(f"Line {number} of {filename!r} is neither a JSON object nor a string.")
        if text is None:
            continue
        if not isinstance(text, str):
            raise CorpusError(f"Field {key!r} on line {number} of {filename!r} is not text.")
        check_unicode(text, f"text on line {number} of {filename!r}", CorpusError)  # JSON escapes like \ud800
        if text.strip():
            yield text


def _csv_texts(lines: Iterable[str], column: str | None, filename: str) -> Iterator[str]:
    csv.field_size_limit(MAX_FILE_BYTES)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise CorpusError(f"{filename!r} has no header row.") from None
    except csv.Error as error:
        raise CorpusError(f"{filename!r} is not a readable CSV file ({error}).") from error
    header = [h.strip() for h in header]
    if column is None:
        column = "text" if "text" in header else (header[0] if len(header) == 1 else None)
    if column not in header:
        raise CorpusError(
            f"{filename!r} has no column {column or 'text'!r}. Its columns: {', '.join(header)}. "
            "Choose the text column."
        )
    index = header.index(column)
    try:
        for row in reader:
            if index < len(row) and row[index].strip():
                yield row[index]
    except csv.Error as error:
        raise CorpusError(f"{filename!r} is not a readable CSV file ({error}).") from error


def list_columns(path: str | Path) -> list[str]:
    """The columns a .csv or .jsonl file offers for the text (header row / first record's fields)."""
    file_path = Path(path)
    lines = _read_lines(file_path, _Flag()) if file_path.is_file() else iter(())
    if file_path.suffix.lower() == ".csv":
        try:
            return [h.strip() for h in next(csv.reader(lines))]
        except StopIteration:
            return []
    if file_path.suffix.lower() == ".jsonl":
        for line in lines:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return []
                return [str(k) for k in record] if isinstance(record, dict) else []
    return []


def _hf_documents(spec: CorpusSpec) -> Iterator[str]:
    if not spec.name:
        raise CorpusError("Give the name of a Hugging Face dataset.")
    from core.sources.hub import how_to_get, hub_usable, is_offline_failure

    streaming = hub_usable()
    try:
        import datasets

        dataset = datasets.load_dataset(spec.name, split=spec.split, streaming=streaming)
    except Exception as error:
        if not streaming or is_offline_failure(error):
            raise OfflineError(
                f"The dataset {spec.name!r} ({spec.split}) is not in the local datasets cache and the "
                f"Hugging Face Hub cannot be used here. {how_to_get(spec.name, repo_type='dataset')}"
            ) from error
        raise CorpusError(f"The dataset {spec.name!r} could not be loaded: {type(error).__name__}: {error}") from error
    columns = list(getattr(dataset, "column_names", None) or [])
    column = spec.column or "text"
    if columns and column not in columns:
        raise CorpusError(
            f"The dataset {spec.name!r} has no column {column!r}. Its columns: {', '.join(columns)}."
        )
    return (row[column] for row in dataset if isinstance(row.get(column), str) and row[column].strip())


# ---- small helpers -----------------------------------------------------------------------------
class _Flag:
    def __init__(self) -> None:
        self.value = False


class _Counter:
    """Counts the documents that pass through (strings, or Segments that start one)."""

    def __init__(self, items: Iterable[str | Segment]) -> None:
        self._items = iter(items)
        self.n = 0

    def __iter__(self) -> Iterator[str | Segment]:
        for item in self._items:
            self.n += isinstance(item, str) or bool(item[0])
            yield item
