"""torch.compile's kernels go to the node's cache, where a restarted worker finds them."""

from __future__ import annotations

import os

from orchestrator.train.worker import keep_compiled_kernels


def test_compiled_kernels_are_kept_beside_the_prepared_data(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", str(tmp_path))
    keep_compiled_kernels()
    assert cache_dir() == str(tmp_path / "inductor")  # where inductor writes and looks
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "chosen"))
    keep_compiled_kernels()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "chosen")  # the user's choice wins
