"""What the plan knows of the data: read from the prepared dataset's manifest, never from the corpus.

``data_plan`` turns a manifest into the sizes the plan needs; ``estimated_data_plan`` guesses them from
the sources' sizes when nothing is prepared yet (``validate`` stays light and says it is an estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


def bytes_per_token_estimate(vocab_size: int) -> float:
    """Bytes of text per token of a byte-level BPE, for an estimate before anything is tokenized:
    about 2 at a vocabulary of 512 and 4 at GPT-2's 50,257 (English prose and code)."""
    return 1.8 + 0.3 * math.log2(max(vocab_size, 256) / 300)


@dataclass(frozen=True)
class DataPlan:
    dataset_uri: str  # the prepared dataset's root: a path, or an s3:// prefix
    manifest_digest: str  # its identity ("" when estimated)
    tokenizer_path: str  # a copy of its tokenizer.json on this machine ("" when estimated)
    n_tokens: int
    n_documents: int
    train_samples: int  # sequences of context_length + 1 tokens
    val_samples: int
    n_shards: int
    eot_id: int
    estimated: bool = False


def samples_of(manifest, split: str, context_length: int) -> int:
    block = context_length + 1
    return sum(shard.tokens // block for shard in manifest.shards_of(split))


def data_plan(manifest, dataset_uri: str, context_length: int, tokenizer_path: str) -> DataPlan:
    totals = manifest.totals
    return DataPlan(
        dataset_uri=dataset_uri,
        manifest_digest=manifest.digest,
        tokenizer_path=tokenizer_path,
        n_tokens=totals["tokens"],
        n_documents=totals["documents"],
        train_samples=samples_of(manifest, "train", context_length),
        val_samples=samples_of(manifest, "val", context_length),
        n_shards=len(manifest.shards),
        eot_id=manifest.tokenizer["eot_id"],
    )


def estimated_data_plan(spec, dataset_uri: str, source_bytes: int) -> DataPlan:
    tokens = int(source_bytes / bytes_per_token_estimate(spec.model.vocab_size))
    block = spec.model.context_length + 1
    val = spec.data.validation_fraction
    return DataPlan(
        dataset_uri=dataset_uri,
        manifest_digest="",
        tokenizer_path="",
        n_tokens=tokens,
        n_documents=0,
        train_samples=int(tokens * (1 - val)) // block,
        val_samples=int(tokens * val) // block,
        n_shards=0,
        eot_id=0,
        estimated=True,
    )


def local_tokenizer(store, manifest, cache: Path) -> str:
    """A path on this machine to the dataset's tokenizer.json (the store's own file when local)."""
    name = manifest.tokenizer["name"]
    if store.is_local:
        return str(store.local_path(name))
    target = cache / "tokenizers" / f"{manifest.tokenizer['sha256']}.json"
    if not target.is_file():
        store.download(name, target)
    return str(target)
