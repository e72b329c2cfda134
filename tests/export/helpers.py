"""Small real pieces for export tests: a BPE tokenizer trained on a little text."""

from __future__ import annotations

from pathlib import Path


def small_tokenizer(directory: Path) -> Path:
    """A 300-token BPE tokenizer (with <|endoftext|>) trained the project's way on a little text."""
    from orchestrator.data.dataset import prepare_dataset

    text = "\n\n".join(f"def f{i}(x):\n    return x * {i}  # ünïcode" for i in range(300))
    return prepare_dataset("files", 300, directory, text).tokenizer_path
