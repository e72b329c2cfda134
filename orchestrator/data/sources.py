"""The source files of a corpus: globs expanded with bounds, each file's kind and compression.

Globs are walked by this module, not by ``glob.glob``: ``**`` never follows a symbolic link to a
directory (a link to its own parent would otherwise grow the walk without end), a ``**`` right under
the file system's root (``/**/*.txt`` names the whole file system) is refused before any walk, the
walk stops after ``MAX_WALKED`` directory entries, and more matches than ``data.max_files`` are
refused. Paths are matched name by name (``**`` in a row count once), in time proportional to the
lengths of the glob and the path, so no glob can make matching hang; places that cannot be looked
at hold nothing. Matches are sorted, so a corpus is the same sequence of files on
every machine.

>>> [kind_of(Path(name)) for name in ("a.txt", "b.jsonl.gz", "c.parquet", "d.json.zst")]
[('text', None), ('jsonl', 'gz'), ('parquet', None), ('jsonl', 'zst')]
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UsageError

# Directory entries one spec's globs may visit in all before the walk is refused.
MAX_WALKED = 2_000_000
COMPRESSIONS = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_WILD = re.compile(r"[*?\[]")


class SourceError(UsageError):
    """A source file cannot be read as the spec says (with the file and where in it)."""


@dataclass(frozen=True)
class Source:
    """One input: a file (or a saved Hugging Face dataset directory) with what it holds."""

    path: str  # absolute
    kind: str  # text | jsonl | parquet | hf-dataset | builtin
    compression: str | None  # gz | zst | None
    size: int  # bytes on disk (a dataset directory: of its files)
    mtime_ns: int

    @property
    def name(self) -> str:
        return Path(self.path).name


def kind_of(path: Path, fmt: str = "auto") -> tuple[str, str | None]:
    """(kind, compression) of a file by its name, or as ``fmt`` says when it is not auto."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    if fmt != "auto":
        return fmt, compression
    return KINDS.get(suffixes[-1] if suffixes else "", "text"), compression


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``datasets.Dataset.save_to_disk``."""
    return _is_dir(path) and _is_file(path / "state.json") and _is_file(path / "dataset_info.json")


def _is_file(path: Path) -> bool:
    """Like Path.is_file, also False where the path cannot be looked at (no permission: /proc/1/fd)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def find_sources(
    patterns: list[str], base: Path, fmt: str = "auto", max_files: int = 100_000
) -> list[Source]:
    """Every file the patterns name (relative ones under ``base``), in a stable order."""
    walked = _Budget(MAX_WALKED)
    sources: list[Source] = []
    seen: set[str] = set()
    for i, pattern in enumerate(patterns):
        matches = _expand(pattern, base, walked, max_files)
        if not matches:
            raise SourceError(f"data.files.{i}: {pattern!r} matches no file under {base}")
        for path in matches:
            if str(path) in seen:
                continue
            seen.add(str(path))
            sources.append(_source(path, fmt))
            if len(sources) > max_files:
                raise SourceError(
                    f"data.files matches more than {max_files} files; hint: narrow the globs, or raise "
                    "data.max_files"
                )
    return sources


def _source(path: Path, fmt: str) -> Source:
    if is_saved_dataset(path):
        files = [p for p in path.rglob("*") if p.is_file()]
        return Source(
            str(path), "hf-dataset", None, sum(p.stat().st_size for p in files), max(_mtime(p) for p in files)
        )
    kind, compression = kind_of(path, fmt)
    if kind == "hf-dataset":
        raise SourceError(f"{path}: data.format hf-dataset needs a directory written by save_to_disk")
    stat = path.stat()
    return Source(str(path), kind, compression, stat.st_size, stat.st_mtime_ns)


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


class _Budget:
    def __init__(self, limit: int):
        self.left = limit
        self.limit = limit

    def spend(self, pattern: str) -> None:
        self.left -= 1
        if self.left < 0:
            raise SourceError(
                f"data.files: {pattern!r} walks more than {self.limit:,} directory entries; hint: start "
                "the glob at the corpus's own directory (data/**/*.txt, not /**/*.txt)"
            )


def _expand(pattern: str, base: Path, budget: _Budget, max_files: int) -> list[Path]:
    """The files (and saved dataset directories) matching one pattern, sorted."""
    full = Path(os.path.expanduser(pattern))
    full = full if full.is_absolute() else base / full
    parts = full.parts
    fixed = next((i for i, part in enumerate(parts) if _WILD.search(part)), len(parts))
    root = Path(*parts[:fixed]) if fixed else Path("/")
    if fixed == len(parts):  # no wildcard: the path itself
        return [full] if _is_file(full) or is_saved_dataset(full) else []
    if "**" in parts[fixed:] and root == Path(root.anchor):
        raise SourceError(
            f"data.files: {pattern!r} would walk the whole file system; hint: start the glob at the "
            "corpus's own directory (data/**/*.txt, not /**/*.txt)"
        )
    wild = _collapsed(parts[fixed:])
    names = [None if part == "**" else _name_matcher(part) for part in wild]
    found: list[Path] = []
    for path in _walk(root, None if "**" in wild else len(wild), budget, pattern):
        if _matches(names, path.relative_to(root).parts) and (_is_file(path) or is_saved_dataset(path)):
            found.append(path)
            if len(found) > max_files:
                break
    return sorted(found)


def _walk(root: Path, max_depth: int | None, budget: _Budget, pattern: str):
    """Entries under root (files and directories) down to ``max_depth`` levels (None: all), never
    through a link to a directory, never into a saved dataset's own directory."""
    stack = [(root, 1)]
    while stack:
        directory, depth = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue  # unreadable or gone: it holds nothing for us
        for entry in entries:
            budget.spend(pattern)
            path = Path(entry.path)
            yield path
            deeper = max_depth is None or depth < max_depth
            if deeper and entry.is_dir(follow_symlinks=False) and not is_saved_dataset(path):
                stack.append((path, depth + 1))


def _collapsed(parts: tuple[str, ...]) -> tuple[str, ...]:
    """``**/**`` is ``**``: one of them, however many in a row."""
    out: list[str] = []
    for part in parts:
        if not (part == "**" and out and out[-1] == "**"):
            out.append(part)
    return tuple(out)


def _name_matcher(part: str):
    """One name of a glob: fnmatch's translation (atomic groups: linear time, never a malformed
    expression), and glob's rule that wildcards do not match a leading dot."""
    regex = re.compile(fnmatch.translate(part))
    dots = part.startswith(".")
    return lambda name: (dots or not name.startswith(".")) and regex.match(name) is not None


def _matches(names: list, parts: tuple[str, ...]) -> bool:
    """Whether a path's names match the glob's (None: ``**``, any number of names that do not start
    with a dot), name by name: time in proportion to the two lengths, whatever the glob holds."""
    reach = [True] + [False] * len(parts)  # reach[j]: the glob so far matches the first j names
    for matcher in names:
        if matcher is None:
            step = [reach[0]]
            for j in range(1, len(parts) + 1):
                step.append(reach[j] or (step[j - 1] and not parts[j - 1].startswith(".")))
        else:
            step = [False] + [reach[j - 1] and matcher(parts[j - 1]) for j in range(1, len(parts) + 1)]
        reach = step
    return reach[-1]
