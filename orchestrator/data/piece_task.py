"""One piece of a corpus, tokenized into a train shard and a validation shard: the task ``prepare``
runs once per piece (on a Ray worker, or in the preparing process for a one-piece corpus).

Memory is bounded by ``batch_chars`` (the text encoded at once) and the tokenizer, whatever the size
of the piece. Each document goes to validation with probability ``validation_fraction``, drawn from a
generator seeded by the dataset's seed and the piece's key: the split depends on the data and the
seed only, never on how many workers prepare it or train on it.

A finished piece writes its shards, then its record (``pieces/NNNNN.json``): a piece with a record is
done, and a ``prepare`` that was killed starts again from the pieces without one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.data.documents import Piece, documents
from orchestrator.data.shards import ShardWriter
from orchestrator.fsutil import file_sha256

# Characters of one chunk handed to the tokenizer: a longer document is encoded in parts of this size
# (the tokenizer holds about 240 bytes per token while it encodes, so a whole 20 MB line at once would
# cost gigabytes).
CHUNK_CHARS = 1 << 16
SPLITS = ("train", "val")
_TOKENIZERS: dict[str, object] = {}


@dataclass(frozen=True)
class PieceJob:
    piece: Piece
    dataset_uri: str  # the dataset's root in the store
    build: str
    tokenizer_name: str  # the build's tokenizer.json, relative to the dataset's root
    tokenizer_sha256: str
    eot_id: int
    dtype: str
    text_field: str
    encoding_errors: str
    validation_fraction: float
    seed: int
    batch_chars: int
    store_settings: object  # orchestrator.storage.store.StoreSettings

    @property
    def record_name(self) -> str:
        return f"builds/{self.build}/pieces/{self.piece.index:05d}.json"

    def shard_name(self, split: str) -> str:
        return f"builds/{self.build}/{split}-{self.piece.index:05d}.bin"


def run_piece(job: PieceJob) -> dict:
    """Tokenize the piece (unless its record says it is done) and return its record."""
    from orchestrator.storage.store import open_store

    store = open_store(job.dataset_uri, job.store_settings)
    if store.exists(job.record_name):
        return json.loads(store.read_bytes(job.record_name))
    with tempfile.TemporaryDirectory(prefix="orchestrator-piece-", dir=_scratch()) as scratch:
        outputs, digest, counts = _tokenize(
            job, _tokenizer(store, job.tokenizer_name, job.tokenizer_sha256), Path(scratch)
        )
        # no path in it: a source's path may hold a secret (data.files takes references)
        record = {"index": job.piece.index}
        record.update(digest=digest, chars=counts["chars"])
        for split in SPLITS:
            local = outputs[split]
            record[split] = {
                "name": job.shard_name(split),
                "tokens": counts[f"{split}_tokens"],
                "documents": counts[f"{split}_documents"],
                "bytes": local.stat().st_size,
                "sha256": file_sha256(local),
            }
            store.upload(local, job.shard_name(split))
    store.write_bytes(job.record_name, json.dumps(record).encode())  # last: the piece is done
    return record


def _scratch() -> str | None:
    directory = os.environ.get("ORCHESTRATOR_SCRATCH_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
    return directory


def _tokenize(job: PieceJob, tokenizer, scratch: Path):
    writers = {split: ShardWriter(scratch / f"{split}.bin", job.dtype) for split in SPLITS}
    counts = {f"{s}_{k}": 0 for s in SPLITS for k in ("tokens", "documents")} | {"chars": 0}
    digest = hashlib.sha256()
    rng = np.random.default_rng([job.seed, int(hashlib.sha256(job.piece.key.encode()).hexdigest()[:15], 16)])
    state = {"split": None}
    batch: list[tuple[str, bool]] = []
    size = 0
    try:
        for text, ends in documents(job.piece, job.text_field, job.encoding_errors, CHUNK_CHARS):
            batch.append((text, ends))
            size += len(text)
            if size >= job.batch_chars:
                _encode(tokenizer, batch, writers, counts, digest, rng, state, job)
                batch, size = [], 0
        _encode(tokenizer, batch, writers, counts, digest, rng, state, job)
    finally:
        for writer in writers.values():
            writer.close()
    return {split: writers[split].path for split in SPLITS}, digest.hexdigest(), counts


def _encode(tokenizer, batch, writers, counts, digest, rng, state, job: PieceJob) -> None:
    """Encode a batch of chunks; each document's chunks go to one split, then its end-of-text id."""
    if not batch:
        return
    encodings = tokenizer.encode_batch_fast([text for text, _ in batch], add_special_tokens=False)
    runs: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    ended = dict.fromkeys(SPLITS, 0)
    for (text, ends), encoding in zip(batch, encodings, strict=True):
        digest.update(text.encode("utf-8"))
        counts["chars"] += len(text)
        if state["split"] is None:  # the document's first chunk decides its split
            state["split"] = "val" if rng.random() < job.validation_fraction else "train"
        split = state["split"]
        runs[split].append(np.asarray(encoding.ids, dtype=job.dtype))
        if ends:
            runs[split].append(np.asarray([job.eot_id], dtype=job.dtype))
            ended[split] += 1
            state["split"] = None
    for split, parts in runs.items():
        if parts:
            ids = np.concatenate(parts)
            writers[split].append(ids, ended[split])
            counts[f"{split}_tokens"] += len(ids)
            counts[f"{split}_documents"] += ended[split]


def _tokenizer(store, name: str, sha256: str):
    """The dataset's tokenizer, read once per process (a Ray worker runs many pieces)."""
    if sha256 not in _TOKENIZERS:
        from tokenizers import Tokenizer

        payload = store.read_bytes(name)
        if hashlib.sha256(payload).hexdigest() != sha256:
            raise RuntimeError(f"{store.describe(name)} changed while the dataset was prepared")
        _TOKENIZERS.clear()
        _TOKENIZERS[sha256] = Tokenizer.from_str(payload.decode("utf-8"))
    return _TOKENIZERS[sha256]


def sample_piece(piece: Piece, text_field: str, encoding_errors: str, budget_chars: int) -> list[str]:
    """The first documents of a piece, about ``budget_chars`` of them: a tokenizer's training sample."""
    texts, size = [], 0
    for text, _ in documents(piece, text_field, encoding_errors, CHUNK_CHARS):
        texts.append(text)
        size += len(text)
        if size >= budget_chars:
            break
    return texts
