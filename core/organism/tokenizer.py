"""The organism's word-level tokenizer, saved in Hugging Face format.

One token per whitespace-separated word of the world, plus four special tokens. Unknown words map
to `<unk>`; the tokenizer prepends `<bos>` itself, so TransformerLens `to_tokens` works as usual.
Files written: tokenizer.json + tokenizer_config.json + special_tokens_map.json, loadable by
`transformers.PreTrainedTokenizerFast.from_pretrained(dir)` / `AutoTokenizer.from_pretrained(dir)`.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

PAD, BOS, UNK, EOS = "<pad>", "<bos>", "<unk>", "<eos>"
SPECIAL_TOKENS = [PAD, BOS, UNK, EOS]


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` (specials first: pad 0, bos 1, unk 2, eos 3)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        if word not in vocab:
            vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return wrap_tokenizer(core)


def wrap_tokenizer(core: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        padding_side="right", add_bos_token=True, model_max_length=1024,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
