"""Loading DeepSpeed checkpoints without running code from them.

A DeepSpeed checkpoint (``*.pt``) is a pickle, and unpickling runs whatever code the file names:
DeepSpeed itself loads with ``torch.load(weights_only=False)``. Every load of a checkpoint here goes
through ``weights_only_loading()``, which makes ``torch.load`` weights-only for DeepSpeed's calls
too (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``): tensors, containers, numbers and the few plain-data classes
this project's checkpoints hold are rebuilt; a file naming anything else is refused before it runs.
A checkpoint is also only read from inside its run's directory (``require_inside``): a tag pointing
elsewhere, or a ``step-<N>`` link out of it, is refused.

>>> states = load_model_states("checkpoints/run/step-40/mp_rank_00_model_states.pt")  # doctest: +SKIP
>>> with weights_only_loading():  # doctest: +SKIP
...     engine.load_checkpoint(run_dir, tag="step-40")
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.errors import UntrustedInput

_FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


def require_under(uri: str, root: str, what: str = "checkpoint location") -> str:
    """An object-store URI (or a path) that lies under ``root`` (the spec's checkpoint.dir)."""
    from orchestrator.storage.location import parse_location

    location, boundary = parse_location(uri), parse_location(root)
    if location.is_local:
        return str(require_inside(uri, root, what))
    prefix = boundary.key + "/" if boundary.key else ""
    if (location.scheme, location.bucket) != (boundary.scheme, boundary.bucket) or not (
        location.key.startswith(prefix) and location.key != boundary.key
    ):
        raise UntrustedInput(
            f"the {what} {uri} lies outside {root}, where this spec keeps its checkpoints; refusing to "
            "read it (a checkpoint is a pickle: loading one runs code). Hint: check the run's "
            "orchestrator.checkpoint_uri tag and the spec's checkpoint.dir"
        )
    return uri


def require_inside(path: str | Path, root: str | Path, what: str = "checkpoint directory") -> Path:
    """``path`` resolved (links followed), if it lies strictly inside ``root``; else UntrustedInput."""
    resolved, boundary = Path(path).resolve(), Path(root).resolve()
    if boundary not in resolved.parents:
        raise UntrustedInput(
            f"the {what} {path} lies outside {boundary}, where this run keeps its files; refusing to "
            "read it (a checkpoint is a pickle: loading one runs code). Hint: run the command in the "
            "directory the run was submitted from, and check the run's orchestrator.checkpoint_dir tag"
        )
    return resolved


@contextlib.contextmanager
def weights_only_loading() -> Iterator[None]:
    """Every ``torch.load`` inside (DeepSpeed's included) rebuilds data only; a checkpoint that
    names anything else raises UntrustedInput instead of running it."""
    import torch

    saved = os.environ.get(_FORCE_WEIGHTS_ONLY)
    os.environ[_FORCE_WEIGHTS_ONLY] = "1"
    try:
        with torch.serialization.safe_globals(checkpoint_globals()):
            yield
    except pickle.UnpicklingError as exc:
        raise UntrustedInput(
            f"refusing to load a checkpoint that holds more than weights and plain data "
            f"({_refused_global(exc)}): unpickling it could run code. Checkpoints are code: load "
            "only those from places you trust (see SECURITY.md)"
        ) from None
    finally:
        if saved is None:
            os.environ.pop(_FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[_FORCE_WEIGHTS_ONLY] = saved


def load_model_states(path: str | Path) -> dict[str, Any]:
    """A ``*_model_states.pt`` file (a ZeRO-0 checkpoint's whole module), weights only."""
    import torch

    with weights_only_loading():
        return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_globals() -> list:
    """The plain-data classes this project's DeepSpeed checkpoints hold besides tensors: numpy
    arrays (each rank's numpy RNG state), DeepSpeed's loss scaler, ZeRO stage and fragment address."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed: list = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct]
    if not _has_cuda():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [*allowed, LossScaler, ZeroStageEnum, fragment_address]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _refused_global(exc: Exception) -> str:
    """What torch's weights-only unpickler refused, from its long message."""
    found = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(exc))
    return f"it names {found.group(1)}" if found else type(exc).__name__
