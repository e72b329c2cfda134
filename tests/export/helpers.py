"""Small real pieces for export tests: a BPE tokenizer trained on a little text, the project's way."""

from __future__ import annotations

from pathlib import Path


def prepared_tokenizer(directory: Path, text: str, vocab_size: int = 300) -> Path:
    """The tokenizer.json of ``text`` (blank-line separated documents) prepared as a run prepares it."""
    from orchestrator.lifecycle import prepare_data
    from orchestrator.spec import parse_spec

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "corpus.txt").write_text(text)
    spec = parse_spec(
        f"name: tok\nmodel: {{vocab_size: {vocab_size}}}\n"
        f"data: {{corpus: files, files: [corpus.txt], prepared: {directory / 'prepared'}}}\n"
    )
    return Path(prepare_data(spec, directory, say=lambda _: None).tokenizer_path)


def small_tokenizer(directory: Path) -> Path:
    """A 300-token BPE tokenizer (with <|endoftext|>) trained the project's way on a little text."""
    text = "\n\n".join(f"def f{i}(x):\n    return x * {i}  # ünïcode" for i in range(300))
    return prepared_tokenizer(directory, text)
