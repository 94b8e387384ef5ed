"""Held-out answer accuracy per family and LM loss of the organism.

Answer accuracy: the share of facts whose answer word is the model's top-1 next token after the
prompt (BOS + prompt words), over the full vocabulary.
"""

from __future__ import annotations

import random

import torch

from core.sources.tokens import tokenize_batch


@torch.no_grad()
def answer_accuracy(model, facts: list[list[str]], batch_size: int = 128) -> float:
    """Share of [prompt, answer] pairs whose answer is the argmax next token."""
    if not facts:
        return float("nan")
    vocab = model.tokenizer.get_vocab()
    unk, pad, bos = vocab["<unk>"], vocab["<pad>"], vocab["<bos>"]
    correct = 0
    for start in range(0, len(facts), batch_size):
        chunk = facts[start:start + batch_size]
        tokens, lengths = tokenize_batch(model.tokenizer, [prompt for prompt, _ in chunk], bos_token_id=bos,
                                         pad_token_id=pad, n_ctx=model.cfg.n_ctx)
        logits = model(tokens.to(model.cfg.device), return_type="logits")
        predicted = logits[torch.arange(len(chunk)), lengths - 1].argmax(-1).cpu()
        answers = torch.tensor([vocab.get(answer, unk) for _, answer in chunk])
        correct += int((predicted == answers).sum())
    return correct / len(facts)


def evaluate_facts(model, eval_facts: dict, max_train_per_family: int = 200, seed: int = 0) -> dict:
    """{"held_out": {family: acc}, "train": {family: acc}} from ground_truth["eval_facts"]."""
    rng = random.Random(seed)
    result: dict[str, dict[str, float]] = {"held_out": {}, "train": {}}
    for family, facts in eval_facts["held_out"].items():
        result["held_out"][family] = round(answer_accuracy(model, facts), 4)
    for family, facts in eval_facts["train"].items():
        sample = facts if len(facts) <= max_train_per_family else rng.sample(facts, max_train_per_family)
        result["train"][family] = round(answer_accuracy(model, sample), 4)
    return result


def evaluate_model(model, world) -> dict:
    from core.organism.world import ground_truth

    return evaluate_facts(model, ground_truth(world)["eval_facts"])


def lm_loss(model, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy over non-PAD targets."""
    logits = model(tokens, return_type="logits")
    targets = tokens[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id
    )


@torch.no_grad()
def corpus_loss(model, texts: list[str]) -> float:
    """Mean next-token loss of `model` on world documents (non-PAD targets)."""
    pad = model.tokenizer.pad_token_id
    tokens, _ = tokenize_batch(model.tokenizer, texts, bos_token_id=model.tokenizer.bos_token_id, pad_token_id=pad,
                               n_ctx=model.cfg.n_ctx, width=model.cfg.n_ctx)
    losses = [lm_loss(model, chunk, pad).item() for chunk in tokens.split(128)]
    return sum(losses) / len(losses)
