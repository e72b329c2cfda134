"""Preparation's memory is bounded by its settings, not by the corpus or by one line: a 100 MB file
holding a 20 MB line is prepared by a process allowed 64 MB of data segment beyond what it holds
once its libraries are imported (RLIMIT_DATA), in which the same file read whole does not fit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

CAP = 64 << 20

CHILD = """
import resource, sys
from pathlib import Path
from orchestrator.data.prepare import prepare
from orchestrator.spec import parse_spec
import numpy, tokenizers  # what preparation imports, before the cap

used = int(open("/proc/self/status").read().split("VmData:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_DATA, (used + int(sys.argv[2]), resource.RLIM_INFINITY))
if sys.argv[3] == "read-whole":
    try:
        text = Path(sys.argv[1], "big.txt").read_text()
        print("READ", len(text))
    except MemoryError:
        print("MEMORY ERROR")
    sys.exit(0)
spec = parse_spec(
    "name: bound\\nmodel: {vocab_size: 300}\\n"
    "data: {corpus: files, files: [big.txt], prepared: prepared, tokenizer: {train_sample_mb: 4}}\\n"
)
manifest = prepare(spec, Path(sys.argv[1]), say=lambda _: None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print("PREPARED", manifest.totals["tokens"], manifest.totals["documents"], "peak MB", peak)
"""


def _write(path: Path) -> tuple[int, int]:
    """(bytes, documents): a 20 MB line, then paragraphs of 50 short lines up to 100 MB."""
    documents = 1
    with open(path, "w") as out:
        out.write(("lorem ipsum " * 1_700_000)[:20_000_000] + "\n\n")  # one 20 MB line
        written, paragraph = 20_000_002, ("dolor sit amet consectetur " * 4 + "\n") * 50 + "\n"
        while written < 100_000_000:
            out.write(paragraph)
            written += len(paragraph)
            documents += 1
    return path.stat().st_size, documents


def _child(work: Path, mode: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(work), str(CAP), mode],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_a_file_larger_than_the_cap_with_a_20_mb_line_is_prepared_within_it(tmp_path):
    size, expected_documents = _write(tmp_path / "big.txt")
    assert size > CAP
    assert "MEMORY ERROR" in _child(tmp_path, "read-whole"), "the cap binds: the file does not fit in it"
    out = _child(tmp_path, "prepare")
    assert "PREPARED" in out, out
    tokens, documents = (int(v) for v in out.split()[1:3])
    # the two pieces' boundary falls inside a paragraph, which becomes two documents
    assert documents in (expected_documents, expected_documents + 1) and tokens > 5_000_000
