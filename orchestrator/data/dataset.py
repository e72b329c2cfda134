"""Tokenize a corpus once into a cached token file, split it 80/20, and shard it by rank.

The token file and the tokenizer are keyed by a hash of the text and the vocabulary size, and
written atomically (temporary file, then rename), so any number of workers may prepare the same
dataset at once and all end up reading identical bytes.

The cache is not trusted blindly: ``manifest.json``, written last, records the SHA-256 of both
files, the token count and the largest token id. A cache whose files do not match it (truncated,
emptied, edited, a corrupt tokenizer.json, ids beyond the vocabulary) is rebuilt, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.data.corpus import load_corpus
from orchestrator.errors import PlanError
from orchestrator.fsutil import atomic_write

SPECIAL_TOKENS = ["<|endoftext|>"]
MANIFEST = "manifest.json"
MAX_VOCAB = int(np.iinfo(np.uint16).max) + 1  # the token file holds uint16 ids
log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where prepared data lives; override with ORCHESTRATOR_CACHE_DIR."""
    default = Path.home() / ".cache" / "gpt-orchestrator"
    return Path(os.environ.get("ORCHESTRATOR_CACHE_DIR", default))


@dataclass(frozen=True)
class PreparedData:
    tokenizer_path: Path
    tokens_path: Path
    n_tokens: int
    vocab_size: int


def prepare_dataset(
    corpus: str, vocab_size: int, cache_dir: Path | None = None, text: str | None = None
) -> PreparedData:
    """Train (or reuse) the BPE tokenizer and the token file for a corpus (or the given text of
    the user's files); idempotent, keyed by the text's hash."""
    if vocab_size > MAX_VOCAB:
        raise PlanError(
            f"model.vocab_size {vocab_size} does not fit the uint16 token file; hint: at most {MAX_VOCAB}"
        )
    text = load_corpus(corpus) if text is None else text
    key = hashlib.sha256(f"{vocab_size}\0{text}".encode()).hexdigest()[:16]
    folder = (cache_dir or cache_root()) / f"{corpus}-{vocab_size}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    tok_path, tokens_path = folder / "tokenizer.json", folder / "tokens.u16.bin"
    manifest = _checked_manifest(folder, vocab_size)
    if manifest is None:
        manifest = _build(folder, text, vocab_size)
    return PreparedData(tok_path, tokens_path, manifest["n_tokens"], vocab_size)


def _build(folder: Path, text: str, vocab_size: int) -> dict:
    """Train the tokenizer, encode the text, and record both in the manifest (written last)."""
    tok_path, tokens_path = folder / "tokenizer.json", folder / "tokens.u16.bin"
    atomic_write(tok_path, _train_tokenizer(text, vocab_size).to_str().encode())
    ids = _encode(tok_path, text)
    atomic_write(tokens_path, ids.tobytes())
    manifest = {
        "tokenizer_sha256": _sha256(tok_path),
        "tokens_sha256": _sha256(tokens_path),
        "n_tokens": int(ids.size),
        "max_id": int(ids.max()) if ids.size else -1,
        "vocab_size": vocab_size,
    }
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def _checked_manifest(folder: Path, vocab_size: int) -> dict | None:
    """The cache's manifest if both files still match it; None (rebuild) otherwise."""
    if not (folder / MANIFEST).exists():
        return None  # never prepared here (or by a version that kept no manifest)
    reason = _cache_problem(folder, vocab_size)
    if reason:
        log.warning("the prepared data in %s cannot be used (%s); preparing it again", folder, reason)
        return None
    return json.loads((folder / MANIFEST).read_text())


def _cache_problem(folder: Path, vocab_size: int) -> str | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        n_tokens, max_id = int(manifest["n_tokens"]), int(manifest["max_id"])
        expected = {
            "tokenizer.json": manifest["tokenizer_sha256"],
            "tokens.u16.bin": manifest["tokens_sha256"],
        }
    except (OSError, ValueError, KeyError, TypeError):
        return "its manifest is unreadable"
    if n_tokens <= 0 or not 0 <= max_id < vocab_size or manifest.get("vocab_size") != vocab_size:
        return "its manifest does not fit the vocabulary"
    for name, digest in expected.items():
        try:
            if _sha256(folder / name) != digest:
                return f"{name} changed since it was written"
        except OSError as exc:
            return f"{name}: {exc.strerror}"
    if (folder / "tokens.u16.bin").stat().st_size != 2 * n_tokens:
        return "the token file has the wrong size"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _train_tokenizer(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_paragraphs(text), trainer=trainer)
    return tokenizer


def _paragraphs(text: str):
    yield from text.split("\n\n")


def _encode(tok_path: Path, text: str) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tok_path))
    eot = tokenizer.token_to_id(SPECIAL_TOKENS[0])
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(list(_paragraphs(text))):
        ids.extend(encoding.ids)
        ids.append(eot)
    if tokenizer.get_vocab_size() > np.iinfo(np.uint16).max:
        raise ValueError("vocab_size above 65535 does not fit the uint16 token file")
    return np.asarray(ids, dtype=np.uint16)


class TokenDataset:
    """Fixed-length blocks of a token file, split deterministically into train and validation.

    A block holds ``context_length + 1`` tokens (inputs plus the shifted targets). Blocks do not
    overlap, and the split is a seeded permutation of block indices, so it is the same on every rank
    and every run.
    """

    def __init__(self, tokens_path: Path, context_length: int, val_fraction: float, seed: int):
        self.tokens = np.memmap(tokens_path, dtype=np.uint16, mode="r")
        self.block = context_length + 1
        n_blocks = len(self.tokens) // self.block
        order = np.random.default_rng(seed).permutation(n_blocks)
        n_val = max(1, round(n_blocks * val_fraction))
        self.val_blocks = np.sort(order[:n_val])
        self.train_blocks = np.sort(order[n_val:])

    def block_tokens(self, index: int) -> np.ndarray:
        start = int(index) * self.block
        return np.asarray(self.tokens[start : start + self.block], dtype=np.int64)

    def train_shard(self, epoch: int, rank: int, world: int, seed: int) -> np.ndarray:
        """This rank's train blocks for an epoch: reshuffled each epoch, equal length on every rank."""
        order = np.random.default_rng([seed, epoch]).permutation(self.train_blocks)
        usable = len(order) - len(order) % world
        return order[rank:usable:world]

    def val_shard(self, rank: int, world: int) -> np.ndarray:
        return self.val_blocks[rank::world]
