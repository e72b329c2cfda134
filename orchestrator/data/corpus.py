"""Built-in corpora that need no download."""

from __future__ import annotations

import glob
import json
from pathlib import Path


def python_docs_text() -> str:
    """The reference text Python ships for `help()`: real English prose and code, about 460 KB."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


CORPORA = {"python-docs": python_docs_text}


def load_corpus(name: str) -> str:
    try:
        return CORPORA[name]()
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}") from None


def read_files(patterns: list[str], fmt: str, field: str, base: Path) -> str:
    """The documents of plain-text or JSONL files, separated by blank lines (document boundaries).

    Patterns are globbed relative to `base`, sorted, so the text (and its hash) is reproducible.
    """
    paths = _expand(patterns, base)
    documents: list[str] = []
    for path in paths:
        if fmt == "jsonl" or (fmt == "auto" and path.suffix == ".jsonl"):
            documents.extend(_jsonl_documents(path, field))
        else:
            documents.append(path.read_text(encoding="utf-8"))
    text = "\n\n".join(d.strip() for d in documents if d.strip())
    if not text:
        raise ValueError(f"the data files hold no text: {', '.join(map(str, paths))}")
    return text


def _expand(patterns: list[str], base: Path) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        # an absolute pattern stays absolute when joined to base
        matches = sorted(Path(p) for p in glob.glob(str(base / pattern), recursive=True) if Path(p).is_file())
        if not matches:
            raise ValueError(f"data.files: {pattern!r} matches no file under {base}")
        paths.extend(matches)
    return paths


def _jsonl_documents(path: Path, field: str) -> list[str]:
    documents = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            value = record.get(field) if isinstance(record, dict) else None
            if not isinstance(value, str):
                raise ValueError(
                    f"{path}:{number}: no string field {field!r} (data.jsonl_field names the text field)"
                )
            documents.append(value)
    return documents
