"""A prepared dataset as a rank reads it: fixed-length samples of the train and validation shards.

    dataset = TokenDataset.open(plan.data.dataset_uri, plan.data.manifest_digest, context_length=128)
    rows = dataset.rows("train", [17, 4, 99])       # int64 [3, context_length + 1]

A sample is ``context_length + 1`` consecutive tokens of one shard (inputs plus the shifted targets);
samples never cross shards and never overlap. The shards come from wherever the dataset lives: a
local or mounted directory is memory-mapped where it is; a dataset on an object store is copied once
per node into the node's cache (``ORCHESTRATOR_CACHE_DIR``), each shard checked against the
manifest's digest, the ranks of a node taking turns through a file lock. No rank ever opens a path
that only the driver has.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.data.manifest import Manifest, ManifestError, ShardInfo
from orchestrator.data.shards import open_tokens
from orchestrator.fsutil import file_sha256


@dataclass(frozen=True)
class _Split:
    shards: list[np.ndarray]
    starts: np.ndarray  # first sample index of each shard (cumulative)
    total: int


class TokenDataset:
    def __init__(self, manifest: Manifest, paths: dict[str, Path], context_length: int):
        self.manifest = manifest
        self.block = context_length + 1
        self.opened_files = [str(p) for p in paths.values()]
        self._splits = {split: self._split(manifest.shards_of(split), paths) for split in ("train", "val")}

    def _split(self, shards: list[ShardInfo], paths: dict[str, Path]) -> _Split:
        arrays = [open_tokens(paths[s.name]) for s in shards]
        counts = np.array([len(a) // self.block for a in arrays], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)])
        return _Split(arrays, starts, int(starts[-1]))

    @classmethod
    def open(
        cls, uri: str, manifest_digest: str, context_length: int, settings=None, cache_dir: Path | None = None
    ) -> TokenDataset:
        from orchestrator.data.prepare import cache_root, read_manifest
        from orchestrator.storage.store import open_store

        store = open_store(uri, settings)
        manifest = read_manifest(store)
        if manifest is None:
            raise ManifestError(f"{uri}: no prepared dataset there (no manifest); run `orchestrator prepare`")
        if manifest_digest and manifest.digest != manifest_digest:
            raise ManifestError(
                f"{uri}: the dataset was prepared again since this run was planned (manifest "
                f"{manifest.digest[:12]}, the run's {manifest_digest[:12]}); hint: resume with the data it "
                "started on, or start a new run"
            )
        if store.is_local:
            paths = {s.name: store.local_path(s.name) for s in manifest.shards}
        else:
            cache = (cache_dir or cache_root()) / "datasets-cache" / manifest.digest[:24]
            paths = node_copy(store, manifest.shards, cache)
        return cls(manifest, paths, context_length)

    @property
    def train_samples(self) -> int:
        return self._splits["train"].total

    @property
    def val_samples(self) -> int:
        return self._splits["val"].total

    def samples(self, split: str) -> int:
        return self._splits[split].total

    def sample(self, split: str, index: int) -> np.ndarray:
        part = self._splits[split]
        shard = int(np.searchsorted(part.starts, index, side="right")) - 1
        start = (int(index) - int(part.starts[shard])) * self.block
        return np.asarray(part.shards[shard][start : start + self.block], dtype=np.int64)

    def rows(self, split: str, indices) -> np.ndarray:
        """The samples ``indices`` of a split as one int64 array [len(indices), context_length + 1]."""
        out = np.empty((len(indices), self.block), dtype=np.int64)
        for row, index in enumerate(indices):
            out[row] = self.sample(split, index)
        return out


def node_copy(store, shards: list[ShardInfo], cache: Path) -> dict[str, Path]:
    """Every shard in this node's cache, downloaded once and checked against its digest."""
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        paths = {}
        for shard in shards:
            target = cache / shard.name
            done = target.with_name(target.name + ".verified")
            if not (done.exists() and target.is_file() and target.stat().st_size == shard.bytes):
                store.download(shard.name, target)
                if file_sha256(target) != shard.sha256:
                    target.unlink(missing_ok=True)
                    raise ManifestError(
                        f"{store.describe(shard.name)}: its content does not match the manifest's digest "
                        "(changed or damaged in the store); hint: prepare the data again"
                    )
                done.write_text(shard.sha256)
            paths[shard.name] = target
    return paths


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def rank_cache_note(dataset: TokenDataset) -> str:
    """Where this rank's shards are (for its log): the files it opened."""
    folders = sorted({os.path.dirname(p) for p in dataset.opened_files})
    return ", ".join(folders)
