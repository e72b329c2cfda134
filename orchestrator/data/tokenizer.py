"""The tokenizer of a dataset: a byte-level BPE trained here on a bounded sample, or a pretrained one
(a ``tokenizer.json`` or a Hugging Face tokenizer directory) used exactly as it is.

Documents are separated by the tokenizer's end-of-text token: ``<|endoftext|>`` when its vocabulary
has it (GPT-2's is id 50256), else the ``eos_token`` of the directory's ``tokenizer_config.json``,
else a special token named like one (``</s>``, ``<eos>``, ``<|end_of_text|>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UsageError

END_OF_TEXT = "<|endoftext|>"
_EOT_NAMES = (END_OF_TEXT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")


class TokenizerError(UsageError):
    """A tokenizer that cannot be used as the spec says."""


@dataclass(frozen=True)
class TokenizerInfo:
    json: str  # the tokenizer, serialised as tokenizer.json holds it
    vocab_size: int
    eot_id: int
    eot_token: str
    pretrained: bool

    def load(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.json)


def train_bpe(texts: Iterable[str], vocab_size: int) -> TokenizerInfo:
    """A byte-level BPE of ``vocab_size`` tokens (``<|endoftext|>`` is id 0) learnt from ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return TokenizerInfo(
        tokenizer.to_str(), tokenizer.get_vocab_size(), tokenizer.token_to_id(END_OF_TEXT), END_OF_TEXT, False
    )


def load_pretrained(path: str | Path, model_vocab_size: int) -> TokenizerInfo:
    """A tokenizer.json (or a directory holding one), checked against the model's vocabulary."""
    from tokenizers import Tokenizer

    given = Path(path)
    file = given / "tokenizer.json" if given.is_dir() else given
    if not file.is_file():
        raise TokenizerError(
            f"data.tokenizer.path: {path} is not a tokenizer.json or a directory holding one; hint: "
            "save a fast tokenizer with tokenizer.save_pretrained(DIR) or "
            "tokenizer.backend_tokenizer.save(FILE)"
        )
    try:
        text = file.read_text(encoding="utf-8")
        tokenizer = Tokenizer.from_str(text)
    except (OSError, UnicodeDecodeError, Exception) as exc:  # the Rust loader raises plain Exception
        raise TokenizerError(f"data.tokenizer.path: {file} does not load as a tokenizer ({exc})") from None
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab > model_vocab_size:
        raise TokenizerError(
            f"data.tokenizer.path: {file} has {vocab:,} tokens, more than model.vocab_size "
            f"{model_vocab_size:,}; hint: set model.vocab_size: {_rounded(vocab)} (a multiple of 64 is "
            "fastest)"
        )
    eot_token = _end_of_text_token(tokenizer, file.parent)
    return TokenizerInfo(text, vocab, tokenizer.token_to_id(eot_token), eot_token, True)


def _rounded(vocab: int) -> int:
    return -(-vocab // 64) * 64


def end_of_text_token(tokenizer, directory: Path | None = None) -> str:
    """The token that separates documents (see the module's docstring); TokenizerError if none."""
    return _end_of_text_token(tokenizer, directory)


def _end_of_text_token(tokenizer, directory: Path | None) -> str:
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if END_OF_TEXT in vocab:
        return END_OF_TEXT
    config = directory / "tokenizer_config.json" if directory is not None else None
    if config is not None and config.is_file():
        try:
            eos = json.loads(config.read_text()).get("eos_token")
        except (OSError, ValueError):
            eos = None
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if isinstance(eos, str) and eos in vocab:
            return eos
    for name in _EOT_NAMES:
        if name in vocab:
            return name
    raise TokenizerError(
        f"data.tokenizer.path: the tokenizer in {directory} has no end-of-text token "
        f"({', '.join(_EOT_NAMES)} "
        "or the eos_token of tokenizer_config.json), which separates documents; hint: add one as a "
        "special token"
    )


def token_dtype(vocab_size: int):
    """uint16 while every id fits, else uint32."""
    import numpy as np

    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)
