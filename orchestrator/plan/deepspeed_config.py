"""RunSpec -> the DeepSpeed config dict, at the edge where DeepSpeed receives it."""

from __future__ import annotations

from typing import Any

from orchestrator.spec import RunSpec


def build_deepspeed_config(spec: RunSpec) -> dict[str, Any]:
    """The config handed to ``deepspeed.initialize``.

    The optimizer and LR scheduler are client objects (torch AdamW and a warmup-cosine LambdaLR),
    so DeepSpeed needs ``zero_allow_untested_optimizer``; batch sizes are spelled out in full so
    DeepSpeed checks that they agree with the world size.

    >>> from orchestrator.spec import parse_spec
    >>> cfg = build_deepspeed_config(parse_spec("name: x"))
    >>> cfg["train_batch_size"], cfg["zero_optimization"]["stage"]
    (16, 2)
    """
    train = spec.train
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "train_batch_size": spec.global_batch_size,
        "gradient_clipping": spec.optimizer.grad_clip,
        "zero_optimization": _zero_block(spec),
        "zero_allow_untested_optimizer": True,
        # Offload with our client torch AdamW: DeepSpeed refuses it unless told not to force its own
        # CPU Adam (which needs a ~70 s JIT build on first use).
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,  # progress is ours to print; keep DeepSpeed's log quiet
        "wall_clock_breakdown": False,
    }
    if spec.deepspeed.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif spec.deepspeed.precision == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    return _merged(config, spec.deepspeed.raw_config)


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, section by section."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def check_with_deepspeed(config: dict[str, Any]) -> str | None:
    """DeepSpeed's own verdict on a config (its pydantic models and asserts), or None if it accepts it.

    Imports DeepSpeed (seconds), so only `plan` and `submit` call it, and only for raw keys.
    """
    import os

    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no GPU needed to check a config
    from deepspeed.runtime.config import DeepSpeedConfig

    # Outside a process group DeepSpeed assumes one rank; restate the batch for one rank.
    single = dict(
        config,
        train_batch_size=config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"],
    )
    try:
        DeepSpeedConfig(single)
    except Exception as exc:  # DeepSpeed raises pydantic errors, AssertionError and ValueError alike
        return " ".join(str(exc).split())
    return None


def _zero_block(spec: RunSpec) -> dict[str, Any]:
    ds = spec.deepspeed
    block: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer != "none":
        block["offload_optimizer"] = _offload(ds.offload_optimizer, ds.nvme_path)
    if ds.offload_params != "none":
        block["offload_param"] = _offload(ds.offload_params, ds.nvme_path)
    return block


def _offload(device: str, nvme_path: str | None) -> dict[str, Any]:
    target: dict[str, Any] = {"device": device, "pin_memory": False}
    if device == "nvme":
        target["nvme_path"] = nvme_path
    return target
