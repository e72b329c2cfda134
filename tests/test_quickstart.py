"""The shipped quickstart, run as `make run` runs it: it must learn, from a sane initialisation."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from tests.conftest import REPO, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_quickstart_learns(tmp_path):
    shutil.copy(REPO / "configs" / "quickstart.yaml", tmp_path / "quickstart.yaml")
    result = run_cli("submit", "quickstart.yaml", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_console_keeps_to_what_matters(result.stdout + result.stderr)
    (run_dir,) = (tmp_path / "checkpoints").iterdir()
    doc = json.loads((run_dir / "training_metrics.json").read_text())
    ln_vocab = math.log(512)
    first = doc["train_loss"][0]
    best_val = min(v for v in doc["val_loss"] if v is not None)
    print(f"ln(vocab) {ln_vocab:.3f}  first train loss {first:.3f}  best val loss {best_val:.3f}")
    assert abs(first - ln_vocab) / ln_vocab < 0.05, "first logged loss should be close to ln(vocab)"
    assert best_val <= 0.7 * ln_vocab, "best validation loss should be at least 30% below ln(vocab)"
    # generate samples from the trained run, by run name, deterministically with a seed
    args = ("generate", run_dir.name, "--prompt", "The for statement", "--max-new-tokens", "40")
    args += ("--seed", "0")
    first, again = run_cli(*args, cwd=tmp_path), run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    print(first.stdout)
    assert first.stdout == again.stdout and first.stdout.startswith("The for statement")


# What Ray and torch print on their own in a healthy run, which a user reads as failures: Ray's C++
# error lines ("E ... core_worker.cc:...: Actor with class name: 'PreemptionWatcher' ..."), Python
# warnings from inside libraries (torch's FutureWarning for the collectives DeepSpeed calls).
NOISE = ("core_worker.cc", "PreemptionWatcher", "FutureWarning", "DeprecationWarning", "is deprecated")


def assert_console_keeps_to_what_matters(output: str) -> None:
    noisy = [line for line in output.splitlines() if any(word in line for word in NOISE)]
    assert not noisy, "\n".join(noisy)
    assert "[train] step" in output and "[train] final validation" in output and "[train] done" in output
    assert "state      SUCCEEDED" in output
