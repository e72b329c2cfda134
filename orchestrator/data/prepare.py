"""Prepare a corpus once: tokenize it in pieces, in parallel, into shards and a manifest.

    manifest = prepare(spec, cwd, runner)        # the lifecycle's data step (`orchestrator prepare`)
    manifest = find_prepared(spec, cwd)          # what `validate` reads: None when not prepared yet

Where the dataset goes: ``data.prepared`` (a local path, a path every node mounts, or an s3:// prefix),
else this machine's cache, in a folder named by the recipe's key (``<corpus>-<vocab>-<key>``), so the
same spec finds the same dataset on every machine. A dataset is reused while its manifest is intact
and every source file it was made from is unchanged (same size and modification time); otherwise it
is prepared again, in a new build, and the old build's files go once the new manifest is written.

The work is a list of pieces (see ``orchestrator.data.documents``) mapped by a ``runner``: Ray tasks
on the cluster's CPUs (the launcher supplies them), or this process for a corpus of one piece.
Finished pieces keep a record, so a killed ``prepare`` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.data.documents import Piece, plan_pieces
from orchestrator.data.manifest import MANIFEST, Manifest, ManifestError, ShardInfo, recipe_key
from orchestrator.data.piece_task import PieceJob, run_piece, sample_piece
from orchestrator.data.sources import Source, find_sources
from orchestrator.data.tokenizer import TokenizerInfo, load_pretrained, token_dtype, train_bpe
from orchestrator.errors import UsageError
from orchestrator.text import format_duration

RECIPE_VERSION = 1


class Runner(Protocol):
    """Maps a function over jobs, anywhere; results in any order."""

    def map(self, function: Callable, jobs: list) -> Iterator[Any]: ...


class InProcess:
    """This process, one job after another (a corpus of one piece needs no cluster)."""

    def map(self, function: Callable, jobs: list) -> Iterator[Any]:
        for job in jobs:
            yield function(job)


@dataclass(frozen=True)
class Recipe:
    """How a dataset is made, from the spec (paths resolved against ``base``)."""

    corpus: str
    patterns: tuple[str, ...]
    fmt: str
    text_field: str
    encoding_errors: str
    tokenizer_path: str | None
    vocab_size: int
    sample_chars: int
    validation_fraction: float
    seed: int
    piece_bytes: int
    batch_chars: int
    max_files: int
    base: Path
    # A path as it may be stored: `${env:NAME}` back in place of a secret it came from (data.files
    # may hold references), so no manifest, key or MLflow entry holds the value.
    as_written: Callable[[str], str] = str

    @classmethod
    def of(cls, spec, cwd: Path) -> Recipe:
        data = spec.data
        tokenizer = data.tokenizer.path
        return cls(
            corpus=data.corpus,
            patterns=tuple(data.files),
            fmt=data.format,
            text_field=data.text_field,
            encoding_errors=data.encoding_errors,
            tokenizer_path=str((cwd / tokenizer).resolve()) if tokenizer else None,
            vocab_size=spec.model.vocab_size,
            sample_chars=int(data.tokenizer.train_sample_mb * 1e6),
            validation_fraction=data.validation_fraction,
            seed=data.seed,
            piece_bytes=max(1, int(data.shard_mb * 1e6)),
            batch_chars=max(1, int(data.prepare_batch_mb * 1e6)),
            max_files=data.max_files,
            base=cwd,
            as_written=spec.with_references,
        )

    def key_fields(self) -> dict[str, Any]:
        """What the dataset depends on, as written in the spec (machine-independent)."""
        return {
            "version": RECIPE_VERSION,
            "corpus": self.corpus,
            "files": [self.as_written(p) for p in self.patterns],
            "format": self.fmt,
            "text_field": self.text_field,
            "encoding_errors": self.encoding_errors,
            "tokenizer": Path(self.tokenizer_path).name if self.tokenizer_path else None,
            "vocab_size": None if self.tokenizer_path else self.vocab_size,
            "sample_chars": None if self.tokenizer_path else self.sample_chars,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "piece_bytes": self.piece_bytes,
        }

    @property
    def key(self) -> str:
        return recipe_key(self.key_fields())

    def folder_name(self) -> str:
        return f"{self.corpus}-{self.vocab_size}-{self.key}"


def cache_root() -> Path:
    """This machine's prepared data; override with ORCHESTRATOR_CACHE_DIR."""
    default = Path.home() / ".cache" / "gpt-orchestrator"
    return Path(os.environ.get("ORCHESTRATOR_CACHE_DIR", default))


def dataset_uri(spec, cwd: Path) -> str:
    """Where this spec's prepared dataset lives."""
    recipe = Recipe.of(spec, cwd)
    root = spec.data.prepared
    if root is None:
        return str(cache_root() / "datasets" / recipe.folder_name())
    if "://" in root:
        return f"{root.rstrip('/')}/{recipe.folder_name()}"
    return str((cwd / root).resolve() / recipe.folder_name())


def find_prepared(spec, cwd: Path, settings=None) -> Manifest | None:
    """The spec's prepared dataset, if it exists and its sources (where this machine has them) are
    unchanged; None otherwise. Reads one file: cheap enough for `validate`."""
    manifest = read_manifest(_store(dataset_uri(spec, cwd), spec, settings))
    if manifest is None:
        return None
    return manifest if stale_reason(manifest, Recipe.of(spec, cwd)) is None else None


def read_manifest(store) -> Manifest | None:
    """The dataset's manifest, or None if it has none (never finished); a damaged one is an error."""
    try:
        text = store.read_bytes(MANIFEST).decode("utf-8", errors="replace")  # bytes that are no text: damaged
    except FileNotFoundError:
        return None
    return Manifest.from_json(text, store.describe(MANIFEST))


def stale_reason(manifest: Manifest, recipe: Recipe) -> str | None:
    """Why the manifest no longer describes what the sources hold, or None. Sources this machine does
    not have (a dataset prepared elsewhere) are taken as they were."""
    if recipe.corpus != "files":
        return None
    try:
        sources = find_sources(list(recipe.patterns), recipe.base, recipe.fmt, recipe.max_files)
    except UsageError:
        return None  # not here: the manifest is all there is
    recorded = {s["path"]: (s["size"], s["mtime_ns"]) for s in manifest.sources}
    current = {recipe.as_written(s.path): (s.size, s.mtime_ns) for s in sources}
    if set(recorded) != set(current):
        added, gone = sorted(set(current) - set(recorded)), sorted(set(recorded) - set(current))
        return f"the files changed ({len(added)} new, {len(gone)} gone)"
    changed = sorted(path for path in current if current[path] != recorded[path])
    return f"{changed[0]} changed since it was prepared" if changed else None


def source_bytes(spec, cwd: Path) -> int:
    """The size of the corpus's sources (for an estimate); NotRunnableHere when they are not here."""
    from orchestrator.errors import NotRunnableHere

    try:
        return _bytes(_sources(Recipe.of(spec, cwd)))
    except UsageError as exc:
        raise NotRunnableHere(f"{exc}; hint: check data.files, data.format and data.text_field") from None


def _store(uri: str, spec, settings=None):
    from orchestrator.storage.store import StoreSettings, open_store

    return open_store(uri, settings or StoreSettings.from_env(spec.storage))


# --- preparing --------------------------------------------------------------------------------


def prepare(spec, cwd: Path, runner: Runner | None = None, say: Callable[[str], None] = print) -> Manifest:
    """The spec's dataset, prepared now unless it already is (and still fresh)."""
    from orchestrator.storage.store import StoreSettings

    settings = StoreSettings.from_env(spec.storage)
    recipe = Recipe.of(spec, cwd)
    store = _store(dataset_uri(spec, cwd), spec, settings)
    try:
        manifest = read_manifest(store)
    except ManifestError as exc:
        say(f"[prepare] {exc}; preparing it again")
        manifest = None
    reason = stale_reason(manifest, recipe) if manifest is not None else "not prepared yet"
    if reason is None:
        return manifest
    sources = _sources(recipe)
    pieces = plan_pieces(sources, recipe.piece_bytes)
    build = _build_id(recipe, sources)
    say(
        f"[prepare] {store.uri}: {reason}; {len(sources)} source(s), {_mb(_bytes(sources))} in "
        f"{len(pieces)} piece(s)"
    )
    runner = runner if runner is not None and len(pieces) > 1 else InProcess()
    tokenizer = _tokenizer(recipe, pieces, store, build, runner, say)
    records = _run_pieces(recipe, pieces, store, build, tokenizer, settings, runner, say)
    manifest = _manifest(recipe, sources, pieces, build, tokenizer, records)
    store.write_bytes(MANIFEST, manifest.to_json().encode())  # last: the dataset exists now
    _remove_other_builds(store, build)
    totals = manifest.totals
    say(
        f"[prepare] done: {totals['documents']:,} documents, {totals['tokens']:,} tokens "
        f"({totals['train_tokens']:,} train, {totals['val_tokens']:,} validation) in "
        f"{len(manifest.shards)} shards"
    )
    return manifest


def _sources(recipe: Recipe) -> list[Source]:
    if recipe.corpus != "files":
        from orchestrator.data.corpus import load_corpus

        size = len(load_corpus(recipe.corpus).encode("utf-8"))
        return [Source(recipe.corpus, "builtin", None, size, 0)]
    return find_sources(list(recipe.patterns), recipe.base, recipe.fmt, recipe.max_files)


def _build_id(recipe: Recipe, sources: list[Source]) -> str:
    stats = [(s.path, s.size, s.mtime_ns) for s in sources]
    return hashlib.sha256(json.dumps([recipe.key, stats]).encode()).hexdigest()[:12]


def _tokenizer(recipe: Recipe, pieces, store, build: str, runner: Runner, say) -> dict[str, Any]:
    """The build's tokenizer: kept if a killed prepare already made it, else loaded or trained."""
    name = f"builds/{build}/tokenizer.json"
    info_name = f"builds/{build}/tokenizer-info.json"
    if store.exists(info_name) and store.exists(name):
        return json.loads(store.read_bytes(info_name))
    if recipe.tokenizer_path:
        info = load_pretrained(recipe.tokenizer_path, recipe.vocab_size)
        say(
            f"[prepare] tokenizer {recipe.tokenizer_path}: {info.vocab_size:,} tokens, end of text "
            f"{info.eot_token!r}"
        )
    else:
        info = _train(recipe, pieces, runner, say)
    payload = info.json.encode("utf-8")
    store.write_bytes(name, payload)
    described = _describe_tokenizer(info, name, hashlib.sha256(payload).hexdigest())
    store.write_bytes(info_name, json.dumps(described).encode())
    return described


def _describe_tokenizer(info: TokenizerInfo, name: str, sha256: str) -> dict[str, Any]:
    return {
        "name": name,
        "sha256": sha256,
        "vocab_size": info.vocab_size,
        "eot_id": info.eot_id,
        "eot_token": info.eot_token,
        "pretrained": info.pretrained,
        "dtype": token_dtype(info.vocab_size).name,
    }


def _train(recipe: Recipe, pieces: list[Piece], runner: Runner, say) -> TokenizerInfo:
    """A BPE learnt from at most ``sample_chars`` of text, taken from the start of every piece."""
    budget = max(1, recipe.sample_chars // len(pieces))
    started = time.perf_counter()

    def sample(piece: Piece) -> list[str]:
        return sample_piece(piece, recipe.text_field, recipe.encoding_errors, budget)

    texts = [text for part in runner.map(sample, pieces) for text in part]
    if not any(text.strip() for text in texts):
        raise UsageError(
            f"the corpus holds no text ({_files(pieces)}); hint: check data.files and data.format"
        )
    sampled = sum(map(len, texts))
    info = train_bpe(texts, recipe.vocab_size)
    say(
        f"[prepare] tokenizer: BPE of {info.vocab_size:,} tokens trained on {_mb(sampled)} of text in "
        f"{time.perf_counter() - started:.1f}s"
    )
    return info


def _run_pieces(recipe, pieces, store, build, tokenizer, settings, runner: Runner, say) -> list[dict]:
    jobs = [
        PieceJob(
            piece=piece,
            dataset_uri=store.uri,
            build=build,
            tokenizer_name=tokenizer["name"],
            tokenizer_sha256=tokenizer["sha256"],
            eot_id=tokenizer["eot_id"],
            dtype=tokenizer["dtype"],
            text_field=recipe.text_field,
            encoding_errors=recipe.encoding_errors,
            validation_fraction=recipe.validation_fraction,
            seed=recipe.seed,
            batch_chars=recipe.batch_chars,
            store_settings=settings,
        )
        for piece in pieces
    ]
    progress = _Progress(sum(_piece_bytes(p) for p in pieces), len(pieces), say)
    records = []
    for record in runner.map(run_piece, jobs):
        records.append(record)
        progress.done(
            _piece_bytes(pieces[record["index"]]), record["train"]["tokens"] + record["val"]["tokens"]
        )
    progress.finish()
    return sorted(records, key=lambda r: r["index"])


def _piece_bytes(piece: Piece) -> int:
    source = piece.source
    if piece.stop is not None and source.kind in ("text", "jsonl") and source.compression is None:
        return piece.stop - piece.start
    return source.size if piece.start == 0 else 0


def _manifest(recipe: Recipe, sources, pieces: list[Piece], build: str, tokenizer: dict, records: list[dict]):
    shards = [ShardInfo(split=split, **record[split]) for record in records for split in ("train", "val")]
    digests: dict[str, list[str]] = {}
    for record in records:
        digests.setdefault(pieces[record["index"]].source.path, []).append(record["digest"])
    total = {
        "documents": sum(s.documents for s in shards),
        "tokens": sum(s.tokens for s in shards),
        "train_documents": sum(s.documents for s in shards if s.split == "train"),
        "val_documents": sum(s.documents for s in shards if s.split == "val"),
        "train_tokens": sum(s.tokens for s in shards if s.split == "train"),
        "val_tokens": sum(s.tokens for s in shards if s.split == "val"),
        "shards": len(shards),
        "source_bytes": _bytes(sources),
    }
    if total["documents"] == 0:
        raise UsageError(
            f"the corpus holds no text ({_files_of(sources)}); hint: check data.files and data.format"
        )
    return Manifest(
        recipe_key=recipe.key,
        build=build,
        corpus=recipe.corpus,
        recipe=recipe.key_fields(),
        sources=[
            {
                "path": recipe.as_written(s.path),
                "kind": s.kind,
                "compression": s.compression,
                "size": s.size,
                "mtime_ns": s.mtime_ns,
                "sha256": hashlib.sha256("".join(digests.get(s.path, [])).encode()).hexdigest(),
            }
            for s in sources
        ],
        tokenizer={k: v for k, v in tokenizer.items() if k != "dtype"},
        dtype=tokenizer["dtype"],
        shards=shards,
        split={"by": "document", "validation_fraction": recipe.validation_fraction, "seed": recipe.seed},
        totals=total,
    )


def _remove_other_builds(store, build: str) -> None:
    """Files of earlier builds (a source changed since): unreferenced once the new manifest is in place."""
    for entry in store.list("builds"):
        parts = entry.path.split("/")
        if len(parts) > 1 and parts[1] != build:
            store.delete(entry.path)


def _bytes(sources: list[Source]) -> int:
    return sum(s.size for s in sources)


def _files(pieces: list[Piece]) -> str:
    return _files_of(list({p.source.path: p.source for p in pieces}.values()))


def _files_of(sources: list[Source]) -> str:
    names = [s.path for s in sources[:3]]
    return ", ".join(names) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")


def _mb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


class _Progress:
    """One line every few seconds: pieces, MB of MB, MB/s, tokens/s, ETA."""

    def __init__(self, total_bytes: int, total_pieces: int, say, every_s: float = 5.0):
        self.total_bytes, self.total_pieces, self.say, self.every_s = total_bytes, total_pieces, say, every_s
        self.bytes = self.tokens = self.pieces = 0
        self.started = self.last = time.perf_counter()

    def done(self, size: int, tokens: int) -> None:
        self.bytes += size
        self.tokens += tokens
        self.pieces += 1
        now = time.perf_counter()
        if now - self.last >= self.every_s and self.pieces < self.total_pieces:
            self.last = now
            self.say(f"[prepare] {self.line(now)}")

    def line(self, now: float) -> str:
        took = max(now - self.started, 1e-9)
        rate = self.bytes / took
        eta = (self.total_bytes - self.bytes) / rate if rate else 0.0
        return (
            f"{self.pieces}/{self.total_pieces} pieces, {_mb(self.bytes)} of {_mb(self.total_bytes)}, "
            f"{rate / 1e6:.1f} MB/s, {self.tokens / took / 1e6:.2f}M tokens/s, ETA {format_duration(eta)}"
        )

    def finish(self) -> None:
        self.say(f"[prepare] {self.line(time.perf_counter()).split(', ETA')[0]}")
