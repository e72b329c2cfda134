"""The manifest of a prepared dataset: written last, so a dataset without one was never finished.

It records what the data was made from (the recipe: sources, tokenizer settings, split) and what
was made (every shard with its size and digest, token and document counts), so that a reader can
check each shard it opens, and ``prepare`` can tell whether a source changed since.

    <prepared>/<corpus>-<vocab>-<recipe key>/
        manifest.json             this file (written last, atomically)
        tokenizer.json            the tokenizer every shard was encoded with
        builds/<build>/pieces/NNNNN.json   one per finished piece (a killed prepare resumes from them)
        builds/<build>/train-NNNNN.bin, val-NNNNN.bin   the shards (see orchestrator.data.shards)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import UsageError

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
FORMAT = "gpt-orchestrator-dataset"
VERSION = 1


class ManifestError(UsageError):
    """A manifest that cannot be read or does not describe a usable dataset."""


@dataclass(frozen=True)
class ShardInfo:
    name: str  # path relative to the dataset's root
    split: str  # train | val
    tokens: int
    documents: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    recipe_key: str
    build: str
    corpus: str
    recipe: dict[str, Any]
    sources: list[dict[str, Any]]
    tokenizer: dict[str, Any]  # sha256, vocab_size, eot_id, eot_token, pretrained
    dtype: str
    shards: list[ShardInfo]
    split: dict[str, Any]
    totals: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        body = self._body()
        return json.dumps({**body, "digest": _digest(body)}, indent=1, sort_keys=True) + "\n"

    def _body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "recipe_key": self.recipe_key,
            "build": self.build,
            "corpus": self.corpus,
            "recipe": self.recipe,
            "sources": self.sources,
            "tokenizer": self.tokenizer,
            "dtype": self.dtype,
            "shards": [vars(s) for s in self.shards],
            "split": self.split,
            "totals": self.totals,
        }

    @property
    def digest(self) -> str:
        """SHA-256 of the manifest's content: the dataset's identity."""
        return _digest(self._body())

    def shards_of(self, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT or data.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} manifest of version {VERSION}")
            stated = data.pop("digest")
            for key in ("format", "version"):
                data.pop(key)
            shards = [ShardInfo(**s) for s in data.pop("shards")]
            manifest = cls(shards=shards, **data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ManifestError(f"{where}: not a readable dataset manifest ({exc})") from None
        if manifest.digest != stated:
            raise ManifestError(f"{where}: the manifest was changed after it was written (digest mismatch)")
        return manifest


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def recipe_key(recipe: dict[str, Any]) -> str:
    """What identifies a dataset: a hash of how it is made (not of where the files lie)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
