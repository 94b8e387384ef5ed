"""Representations of a concept set's items on any model, at every resid_post site (docs/CONCEPTS.md).

Two places to read (``location``):

- ``"word"``: the item's own tokens in its set's *context* templates ("Let's meet on {word}"). A causal
  model's state at the word depends only on the text up to it, so each prompt is run up to and
  including the word. A word the tokenizer splits into several tokens is read at its **last token**
  (``position="last"``, the default, as Gurnee & Tegmark read entity names) or as the **mean over its
  tokens** (``position="mean"``). The word's tokens are those of the prompt up to the word that are
  not tokens of the text before it, so a byte-level BPE's leading space (" Monday") belongs to the word.
- ``"answer"``: the last token of the set's *relation* templates ("two days after {word} is"), where
  the model must hold the answer (Engels et al.'s answer position). Rows are grouped by item
  (``group="item"``) or by the answer item (``group="answer"``, cyclic and ordinal offsets).

Words the model cannot represent are never dropped silently: a word the tokenizer maps to its unknown
token is tried once in lower case (the organism's world is lower case; the form read is recorded),
and if that fails too it is listed in ``dropped`` with the reason. A template whose own words are
unknown to the tokenizer is skipped and listed (a word-level tokenizer would read "<unk>" contexts).
Every prompt starts with BOS when the model has one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.concepts.schema import ConceptError, ConceptSet, fill
from core.jsonable import Result
from core.sources.tokens import pad_rows

POSITIONS = ("last", "mean")
LOCATIONS = ("word", "answer")
GROUPS = ("item", "answer")
ProgressFn = Callable[[int, int], None]  # (prompts done, prompts in all)

_FIELD = re.compile(r"\{(word|pair)\}")


@dataclass(frozen=True, eq=False)
class DroppedItem(Result):
    word: str
    reason: str


@dataclass(frozen=True)
class SplitWord:
    word: str  # the form read
    pieces: tuple[str, ...]  # its tokens, as the tokenizer writes them


@dataclass(frozen=True)
class SkippedTemplate:
    template: str
    reason: str


@dataclass(frozen=True)
class TokenizationReport:
    """How a model's tokenizer sees a set's words and templates, before anything runs."""

    forms: dict[str, str]  # word -> the form that is read (itself, or its lower case)
    dropped: tuple[DroppedItem, ...]  # words the model cannot represent, with the reason
    split: tuple[SplitWord, ...]  # words read over several tokens (not an error)
    skipped_templates: tuple[SkippedTemplate, ...]

    @property
    def lowered(self) -> dict[str, str]:
        return {w: f for w, f in self.forms.items() if f != w}


@dataclass(frozen=True)
class ConceptReadout:
    """Mean representation per row (an item, or an answer) at each site."""

    set_name: str
    kind: str
    location: str  # "word" | "answer"
    position: str  # "last" | "mean" (location "word"); "last prompt token" (location "answer")
    group: str  # "item" | "answer"
    sites: tuple[str, ...]
    items: tuple[int, ...]  # per row: index into the set's items (the answer item when group="answer")
    words: tuple[str, ...]  # per row: the item's word as the set writes it
    forms: tuple[str, ...]  # per row: the text actually read (lower case where the original was unknown)
    arrays: dict[str, np.ndarray]  # site -> [n_rows, d] float64
    pair_arrays: dict[str, np.ndarray] | None  # analogy sets at "word": site -> [n_rows, d] of each pair word
    n_prompts: np.ndarray  # per row: prompts averaged
    dropped: tuple[DroppedItem, ...]
    split: tuple[SplitWord, ...]
    skipped_templates: tuple[SkippedTemplate, ...]
    templates: tuple[str, ...]  # templates that were read
    prompt_arrays: dict[str, np.ndarray] | None = None  # keep_prompts: site -> [n_prompts, d] (word rows only)
    prompt_rows: np.ndarray | None = None  # keep_prompts: row of each prompt

    def __len__(self) -> int:
        return len(self.items)

    def values(self, concept_set: ConceptSet, name: str | None = None) -> np.ndarray:
        """The value `name` (default: the first) of each row's item, [n_rows]."""
        index = 0 if name is None else concept_set.value_names.index(name)
        return np.array([concept_set.items[i].values[index] for i in self.items], dtype=np.float64)


# ---- tokenization ------------------------------------------------------------------------------
def _representable(model: Any, text: str) -> bool:
    ids = model.encode(text)
    unk = getattr(model, "unk_token_id", None)
    return bool(ids) and (unk is None or unk not in ids)


def word_pieces(model: Any, form: str, head: str = "The") -> list[int]:
    """Token ids of `form` after `head` (+ a space): the tokens of head + form that head alone lacks."""
    before = model.encode(head) if head else []
    after = model.encode(f"{head} {form}" if head else form)
    return after[_common_prefix(before, after):]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _unknown_words(model: Any, template: str) -> list[str]:
    literal = _FIELD.sub(" ", template)
    return [w for w in literal.split() if not _representable(model, w)]


def check_tokenization(model: Any, concept_set: ConceptSet) -> TokenizationReport:
    """Which words of the set (pair words included) the model can represent, in which form, which it
    splits, and which templates hold words it cannot represent."""
    words = list(dict.fromkeys([*concept_set.words, *(i.pair for i in concept_set.items if i.pair)]))
    forms, dropped, split = {}, [], []
    unk = getattr(model, "unk_token_id", None)
    for word in words:
        if _representable(model, word):
            forms[word] = word
        elif word.lower() != word and _representable(model, word.lower()):
            forms[word] = word.lower()
        else:
            ids = model.encode(word)
            reason = ("the tokenizer maps it to its unknown token" if ids and unk in ids
                      else "the tokenizer gives it no tokens")
            dropped.append(DroppedItem(word, reason + (" (lower case too)" if word.lower() != word else "")))
            continue
        pieces = word_pieces(model, forms[word])
        if len(pieces) > 1:
            split.append(SplitWord(forms[word], tuple(model.to_str_tokens(pieces))))
    skipped = []
    for template in (*concept_set.context_templates, *(t.text for t in concept_set.relation_templates)):
        unknown = _unknown_words(model, template)
        if unknown:
            skipped.append(SkippedTemplate(template, "the tokenizer does not know "
                                           + ", ".join(repr(w) for w in dict.fromkeys(unknown))))
    return TokenizationReport(forms, tuple(dropped), tuple(split), tuple(skipped))


# ---- prompts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Prompt:
    row: int  # item index (group item) or answer index (group answer)
    role: str  # "word" | "pair"
    ids: tuple[int, ...]  # BOS included
    span: tuple[int, ...]  # positions of the word's tokens (location word) or (last,) (answer)
    template: str


def _with_bos(model: Any, ids: list[int]) -> tuple[list[int], int]:
    bos = getattr(model, "bos_token_id", None)
    return ([bos, *ids], 1) if bos is not None else (list(ids), 0)


def _word_prompts(model: Any, concept_set: ConceptSet, forms: dict[str, str], templates: Sequence[str],
                  n_ctx: int, too_long: set[str]) -> list[_Prompt]:
    prompts = []
    for index, item in enumerate(concept_set.items):
        word, pair = forms.get(item.word), forms.get(item.pair) if item.pair else None
        if word is None or (item.pair and pair is None):
            continue
        for template in templates:
            for match in _FIELD.finditer(template):
                role = match.group(1)
                filler = word if role == "word" else pair
                if filler is None:
                    continue  # a word without a pair has no {pair} to fill
                head = fill(template[: match.start()], word, pair)
                prefix = head + filler
                before, ids = (model.encode(head) if head.strip() else []), model.encode(prefix)
                start = _common_prefix(before, ids)
                ids, shift = _with_bos(model, ids)
                if len(ids) > n_ctx:
                    too_long.add(item.word)
                    continue
                span = tuple(range(start + shift, len(ids)))
                if span:
                    prompts.append(_Prompt(index, role, tuple(ids), span, template))
    return prompts


def _answer_prompts(model: Any, concept_set: ConceptSet, forms: dict[str, str], group: str, n_ctx: int,
                    too_long: set[str], skipped: set[str]) -> list[_Prompt]:
    prompts = []
    for template in concept_set.relation_templates:
        if template.text in skipped:
            continue
        for index, item in enumerate(concept_set.items):
            word, pair = forms.get(item.word), forms.get(item.pair) if item.pair else None
            if word is None or ("{pair}" in template.text and pair is None):
                continue
            answer_text, answer_index = concept_set.answer(index, template)
            if template.answer.startswith("offset") and answer_index is None:
                continue  # an ordinal step past either end has no answer
            if group == "answer" and answer_index is None:
                raise ConceptError(f"Grouping by the answer needs relation templates whose answer is an item "
                                   f"(offset:N); {template.text!r} has {template.answer!r}.")
            ids, _ = _with_bos(model, model.encode(fill(template.text, word, pair)))
            if len(ids) > n_ctx:
                too_long.add(item.word)
                continue
            row = index if answer_index is None or group != "answer" else answer_index
            prompts.append(_Prompt(row, "word", tuple(ids), (len(ids) - 1,), template.text))
    return prompts


# ---- running -----------------------------------------------------------------------------------
def default_sites(model: Any) -> list[str]:
    """Every block's resid_post."""
    if hasattr(model, "resid_post_hooks"):
        return list(model.resid_post_hooks())
    return [f"blocks.{layer}.hook_resid_post" for layer in range(int(model.n_layers))]


def read_concepts(model: Any, concept_set: ConceptSet, *, location: str = "word", position: str = "last",
                  group: str = "item", sites: Sequence[str] | None = None, batch_size: int = 32,
                  keep_prompts: bool = False, progress: ProgressFn | None = None) -> ConceptReadout:
    """Representations of the set's items on `model` (core.sources.models.LoadedModel face: encode,
    run, n_ctx, bos_token_id, unk_token_id, to_str_tokens) at `sites` (default: every resid_post),
    averaged over the set's templates; see the module docstring for the rules."""
    if location not in LOCATIONS:
        raise ConceptError(f"location must be one of {', '.join(LOCATIONS)}; got {location!r}.")
    if position not in POSITIONS:
        raise ConceptError(f"position must be one of {', '.join(POSITIONS)} (the word's last token, or the mean "
                           f"over its tokens); got {position!r}.")
    if group not in GROUPS or (group == "answer" and location != "answer"):
        raise ConceptError("group is 'item', or 'answer' with location 'answer'.")
    sites = list(sites or default_sites(model))
    report = check_tokenization(model, concept_set)
    skipped = {t.template for t in report.skipped_templates}
    n_ctx = int(model.n_ctx)
    too_long: set[str] = set()
    if location == "word":
        templates = [t for t in concept_set.context_templates if t not in skipped]
        prompts = _word_prompts(model, concept_set, report.forms, templates, n_ctx, too_long)
    else:
        templates = [t.text for t in concept_set.relation_templates if t.text not in skipped]
        prompts = _answer_prompts(model, concept_set, report.forms, group, n_ctx, too_long, skipped)
    n_items = len(concept_set.items)
    sums, counts, kept_prompts = _run(model, prompts, sites, position if location == "word" else "last",
                                      n_items, batch_size, keep_prompts, progress)
    reads_pair = location == "word" and concept_set.kind == "analogy" and any("{pair}" in t for t in templates)
    # a word the tokenizer cannot represent is dropped, also as the answer of another item's prompts
    rows = [i for i in range(n_items) if concept_set.items[i].word in report.forms
            and counts["word"][i] > 0 and (not reads_pair or counts["pair"][i] > 0)]
    dropped = list(report.dropped)
    why = _drop_reasons(concept_set, report, templates, too_long, location, group)
    dropped += [DroppedItem(concept_set.items[i].word, why(i)) for i in range(n_items)
                if i not in set(rows) and concept_set.items[i].word in report.forms]

    def means(role: str) -> dict[str, np.ndarray]:
        n = counts[role][rows][:, None]
        return {s: sums[role][s][rows] / np.maximum(n, 1) for s in sites}

    prompt_arrays = prompt_rows = None
    if keep_prompts:
        keep = [k for k, p in enumerate(kept_prompts[0]) if p.role == "word" and p.row in set(rows)]
        position_of = {r: k for k, r in enumerate(rows)}
        prompt_rows = np.array([position_of[kept_prompts[0][k].row] for k in keep], dtype=np.int64)
        prompt_arrays = {s: kept_prompts[1][s][keep] for s in sites}
    return ConceptReadout(
        set_name=concept_set.name, kind=concept_set.kind, location=location,
        position=position if location == "word" else "last prompt token", group=group, sites=tuple(sites),
        items=tuple(rows), words=tuple(concept_set.items[i].word for i in rows),
        forms=tuple(report.forms[concept_set.items[i].word] for i in rows), arrays=means("word"),
        pair_arrays=means("pair") if reads_pair else None, n_prompts=counts["word"][rows].copy(),
        dropped=tuple(dropped), split=report.split, skipped_templates=report.skipped_templates,
        templates=tuple(templates), prompt_arrays=prompt_arrays, prompt_rows=prompt_rows)


def _run(model: Any, prompts: list[_Prompt], sites: list[str], position: str, n_rows: int, batch_size: int,
         keep_prompts: bool, progress: ProgressFn | None):
    """Run the prompts in batches of similar length; sum each prompt's vector into its row."""
    d = int(getattr(model, "d_model", 0)) or None
    sums: dict[str, dict[str, np.ndarray]] = {"word": {}, "pair": {}}
    counts = {"word": np.zeros(n_rows, dtype=np.int64), "pair": np.zeros(n_rows, dtype=np.int64)}
    order = sorted(range(len(prompts)), key=lambda k: len(prompts[k].ids))
    kept: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    kept_order: list[_Prompt] = []
    pad = int(getattr(model, "pad_token_id", 0) or 0)
    for start in range(0, len(order), max(1, batch_size)):
        batch = [prompts[k] for k in order[start:start + batch_size]]
        tokens, _ = pad_rows([p.ids for p in batch], pad)
        acts = model.run(tokens, sites)
        for s in sites:
            a = acts[s].detach().to("cpu", torch.float64).numpy()
            if d is None:
                d = a.shape[-1]
            for role in ("word", "pair"):
                sums[role].setdefault(s, np.zeros((n_rows, a.shape[-1])))
            vectors = np.stack([a[b, list(p.span)].mean(0) if position == "mean" else a[b, p.span[-1]]
                                for b, p in enumerate(batch)])
            for b, p in enumerate(batch):
                sums[p.role][s][p.row] += vectors[b]
            if keep_prompts:
                kept[s].append(vectors)
        for p in batch:
            counts[p.role][p.row] += 1
        kept_order += batch
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    for s in sites:
        for role in ("word", "pair"):
            sums[role].setdefault(s, np.zeros((n_rows, d or 0)))
    stacked = {s: (np.concatenate(v) if v else np.zeros((0, d or 0))) for s, v in kept.items()}
    return sums, counts, (kept_order, stacked)


def _drop_reasons(concept_set: ConceptSet, report: TokenizationReport, templates: list[str], too_long: set[str],
                  location: str, group: str) -> Callable[[int], str]:
    missing_pair = {i.word for i in concept_set.items if i.pair and i.pair not in report.forms}

    def reason(index: int) -> str:
        item = concept_set.items[index]
        if item.word in missing_pair:
            return f"its pair {item.pair!r} cannot be represented"
        if not templates:
            return (f"no {'context' if location == 'word' else 'relation'} template of the set is readable by this "
                    "tokenizer")
        if item.word in too_long:
            return "its prompts are longer than the model's context"
        if group == "answer":
            return "it is the answer of no readable prompt"
        return "no prompt could be built for it"

    return reason
