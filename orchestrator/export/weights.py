"""A run's weights: pick a checkpoint, consolidate its ZeRO shards, load them without running code.

DeepSpeed checkpoints are ``torch.save`` files, that is pickles, and unpickling can run any code
the file names. Every load here happens inside ``orchestrator.train.safe_load.weights_only_loading``:
each ``torch.load`` (DeepSpeed's own in ``get_fp32_state_dict_from_zero_checkpoint`` included) only
rebuilds tensors, containers, numbers and the few plain-data classes this project's checkpoints
hold, and refuses anything else without calling it. A ZeRO-0 checkpoint keeps the whole module in
one file; ZeRO 1-3 shards are consolidated by DeepSpeed's own utility.

>>> info = pick_checkpoint("checkpoints/quickstart-20250101-120000", "best")  # doctest: +SKIP
>>> model = load_gpt(spec.model, consolidated_state_dict(info))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from orchestrator.errors import NotFoundError, UsageError

CHECKPOINT_CHOICES = ("best", "latest")
STAGE0_MODEL_FILE = "mp_rank_00_model_states.pt"


def pick_checkpoint(checkpoint_dir: str | Path, which: str = "best"):
    """The run's best or latest complete checkpoint (``CheckpointInfo``), on this machine: one on an
    object store is copied into the cache first (every file checked against its recorded digest)."""
    from orchestrator.train.checkpoint import best_checkpoint, latest_complete_checkpoint

    if which not in CHECKPOINT_CHOICES:
        raise UsageError(f"checkpoint {which!r} is neither of {', '.join(CHECKPOINT_CHOICES)}")
    pick = best_checkpoint if which == "best" else latest_complete_checkpoint
    store = _as_store(checkpoint_dir)
    info = pick(store)
    if info is None:
        raise NotFoundError(
            f"{checkpoint_dir} holds no complete checkpoint (a step-<N> directory with COMPLETE.json); "
            "hint: a run writes one at the end and every checkpoint.interval steps"
        )
    _require_own(store, info)
    return local_checkpoint(store, info)


def _require_own(store, info) -> None:
    """A checkpoint is a pickle: only one inside the run's own location (no step-<N> link out of it)."""
    from orchestrator.train.safe_load import require_inside, require_under

    if store.is_local:
        require_inside(info.location, store.uri)
    else:
        require_under(info.location, store.uri)


def _as_store(where):
    """A run's checkpoint location (a path, a URI or a ``Store``) as a ``Store``."""
    from orchestrator.storage.store import Store, open_store

    return where if isinstance(where, Store) else open_store(str(where))


def local_checkpoint(where, info):
    """``info`` itself when it is a local folder, else its copy in this machine's cache."""
    import dataclasses

    from orchestrator.storage.location import parse_location

    if parse_location(info.location).is_local:
        return info
    from orchestrator.data.prepare import cache_root
    from orchestrator.train.checkpoint_manager import download_checkpoint

    store = _as_store(where)
    run = store.uri.rstrip("/").rsplit("/", 1)[-1]
    target = cache_root() / "checkpoints" / run / info.tag
    download_checkpoint(store, info, target)
    return dataclasses.replace(info, location=str(target))


def consolidated_state_dict(info, trust_checkpoint: bool = False) -> dict:
    """The fp32 weights of checkpoint ``info`` under the model's own parameter names.

    ``trust_checkpoint`` unpickles fully (for a checkpoint from a place you trust whose files hold
    classes this project does not know)."""
    from orchestrator.train.safe_load import weights_only_loading

    loading = contextlib.nullcontext() if trust_checkpoint else weights_only_loading()
    with loading, contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's notes would mix with text
        state_dict = _state_dict(info)
    return {name: tensor.float() for name, tensor in state_dict.items()}


def _state_dict(info) -> dict:
    import torch

    if info.zero_stage == 0:  # no ZeRO shards: the whole module is in the model-states file
        return torch.load(info.path / STAGE0_MODEL_FILE, map_location="cpu")["module"]
    if not torch.cuda.is_available():  # before deepspeed is imported: no probing for GPUs
        import os

        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(info.path.parent), tag=info.tag)


def load_gpt(model_spec, state_dict: dict):
    """The plain GPT of ``model_spec`` with these weights (strict: every name must match), in eval
    mode, at the tokenizer's vocabulary (``vocab_size``; the rows a padded vocabulary added for
    training are cut off). A tied model's head may be missing from ``state_dict``: it is the token
    embedding."""
    from orchestrator.train.model import build_model, trim_vocab

    model = build_model(model_spec)
    weights = dict(state_dict)
    if model_spec.tie_weights and "head.weight" not in weights and "tok_emb.weight" in weights:
        weights["head.weight"] = weights["tok_emb.weight"]
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"the weights do not fit the spec's model: {exc}") from None
    return trim_vocab(model, model_spec.vocab_size).eval()
