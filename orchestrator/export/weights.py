"""A run's weights: pick a checkpoint, consolidate its ZeRO shards, load them without running code.

DeepSpeed checkpoints are ``torch.save`` files, that is pickles, and unpickling can run any code
the file names. Every ``.pt`` file of the checkpoint is therefore first read with
``torch.load(weights_only=True)``, which only rebuilds tensors, containers, numbers and the few
plain-data classes DeepSpeed and the training state store (listed in ``_allowed_globals``) and
refuses anything else without calling it. Only then are the shards handed to DeepSpeed's own
``get_fp32_state_dict_from_zero_checkpoint`` (ZeRO 1-3), which unpickles them fully: the same
bytes, already known to hold nothing but data. A ZeRO-0 checkpoint keeps the whole module in one
file, which is loaded with ``weights_only=True`` directly.

>>> info = pick_checkpoint("checkpoints/quickstart-20250101-120000", "best")  # doctest: +SKIP
>>> model = load_gpt(spec.model, consolidated_state_dict(info))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path

from orchestrator.errors import NotFoundError, UsageError

log = logging.getLogger(__name__)
CHECKPOINT_CHOICES = ("best", "latest")
STAGE0_MODEL_FILE = "mp_rank_00_model_states.pt"


def pick_checkpoint(checkpoint_dir: str | Path, which: str = "best"):
    """The run's best or latest complete checkpoint (``CheckpointInfo``)."""
    from orchestrator.train.checkpoint import best_checkpoint, latest_complete_checkpoint

    if which not in CHECKPOINT_CHOICES:
        raise UsageError(f"checkpoint {which!r} is neither of {', '.join(CHECKPOINT_CHOICES)}")
    pick = best_checkpoint if which == "best" else latest_complete_checkpoint
    info = pick(checkpoint_dir)
    if info is None:
        raise NotFoundError(
            f"{checkpoint_dir} holds no complete checkpoint (a step-<N> directory with COMPLETE.json); "
            "hint: a run writes one at the end and every checkpoint.interval steps"
        )
    return info


def consolidated_state_dict(info, trust_checkpoint: bool = False) -> dict:
    """The fp32 weights of checkpoint ``info`` under the model's own parameter names.

    ``trust_checkpoint`` skips the data-only check (for a checkpoint from a place you trust whose
    files hold classes this project does not know)."""
    import torch

    if info.zero_stage == 0:  # no ZeRO shards: the whole module is in the model-states file
        path = info.path / STAGE0_MODEL_FILE
        if trust_checkpoint:
            states = torch.load(path, map_location="cpu", weights_only=False)
        else:
            states = _load_data_only(path)
        return {name: tensor.float() for name, tensor in states["module"].items()}
    if not trust_checkpoint:
        check_pickles_are_data(info.path)
    _before_deepspeed_import()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with contextlib.redirect_stdout(sys.stderr):  # its progress notes would mix with printed text
        state_dict = get_fp32_state_dict_from_zero_checkpoint(str(info.path.parent), tag=info.tag)
    return {name: tensor.float() for name, tensor in state_dict.items()}


def check_pickles_are_data(tag_dir: str | Path) -> None:
    """Refuse (``UsageError``) a checkpoint whose pickles name anything beyond plain data."""
    files = sorted(Path(tag_dir).glob("*.pt"))
    if not files:
        raise NotFoundError(f"{tag_dir} holds no .pt files: not a DeepSpeed checkpoint")
    for path in files:
        _load_data_only(path, mmap=True)


def _load_data_only(path: Path, mmap: bool = False):
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise UsageError(
            f"refusing to load {path}: it holds pickled objects beyond tensors and plain data "
            f"({_refused_global(exc)}), and unpickling them could run code. Checkpoints are code: "
            "load only those from places you trust (SECURITY.md). If you trust this one, pass "
            "trust_checkpoint (--trust-checkpoint)"
        ) from None


def _refused_global(exc: Exception) -> str:
    """What torch's weights-only unpickler refused, from its long message."""
    found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(exc))
    if found:
        return f"it names {found.group(1)}"
    lines = [line.strip() for line in str(exc).splitlines() if "WeightsUnpickler error" in line]
    return lines[0] if lines else type(exc).__name__


def _allowed_globals() -> list:
    """Plain-data classes a DeepSpeed checkpoint of this project stores: numpy arrays (the numpy
    RNG state of each rank), DeepSpeed's loss scaler, ZeRO stage enum and fragment addresses."""
    import numpy as np

    allowed: list = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed.append(_reconstruct)
    allowed.extend(_deepspeed_globals())
    return allowed


def _deepspeed_globals() -> list:
    _before_deepspeed_import()
    try:
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:  # another DeepSpeed layout: such files are refused, not trusted blindly
        log.debug("DeepSpeed classes not importable; checkpoints naming them will be refused")
        return []
    return [LossScaler, ZeroStageEnum, fragment_address]


def _before_deepspeed_import() -> None:
    import torch

    if not torch.cuda.is_available():  # DeepSpeed would otherwise probe for (and warn about) GPUs
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def load_gpt(model_spec, state_dict: dict):
    """The plain GPT of ``model_spec`` with these weights (strict: every name must match), in eval
    mode. A tied model's head may be missing from ``state_dict``: it is the token embedding."""
    from orchestrator.train.model import build_model

    model = build_model(model_spec)
    weights = dict(state_dict)
    if model_spec.tie_weights and "head.weight" not in weights and "tok_emb.weight" in weights:
        weights["head.weight"] = weights["tok_emb.weight"]
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"the weights do not fit the spec's model: {exc}") from None
    return model.eval()
