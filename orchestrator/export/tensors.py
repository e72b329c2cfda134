"""The plain export: consolidated weights in ``model.safetensors`` under this project's own parameter
names, ``model_spec.json`` (the spec's model section and where the weights came from) and the
tokenizer. safetensors holds only tensors and a JSON header, so loading it runs no code.

    out/
        model.safetensors   fp32 or bf16; a tied head is stored once (as tok_emb.weight)
        model_spec.json     {"format": ..., "model": {...ModelSpec...}, "dtype": ..., "source": {...}}
        tokenizer.json      the BPE tokenizer the run trained with

Load it back with ``orchestrator.generate.load_from_directory(out)``, or by hand::

    from safetensors.torch import load_file
    weights = load_file("out/model.safetensors")
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from orchestrator.errors import UsageError

SPEC_FILE = "model_spec.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "gpt-orchestrator/gpt-v1"
DTYPES = ("fp32", "bf16")


def write_safetensors_directory(
    model, model_spec, tokenizer_path: str | Path, out_dir: str | Path, dtype: str, source: dict
) -> list[Path]:
    """Write the weights, ``model_spec.json`` and ``tokenizer.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tied = model.head.weight is model.tok_emb.weight
    weights = {k: v for k, v in model.state_dict().items() if not (tied and k == "head.weight")}
    spec = {
        "format": FORMAT_NAME,
        # the weights are at the tokenizer's vocabulary (see weights.load_gpt): no padding to rebuild
        "model": model_spec.model_copy(update={"vocab_multiple": 1}).model_dump(mode="json"),
        "dtype": dtype,
        "weights": WEIGHTS_FILE,
        "tokenizer": "tokenizer.json",
        "source": source,
    }
    spec_path = out / SPEC_FILE
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    return [save_weights(cast_weights(weights, dtype), out / WEIGHTS_FILE), spec_path, out / "tokenizer.json"]


def load_safetensors_directory(directory: str | Path):
    """(GPT in eval mode, tokenizer.json path) from a ``write_safetensors_directory`` output."""
    from orchestrator.export.weights import load_gpt
    from orchestrator.spec.models import ModelSpec

    root = Path(directory)
    spec = json.loads((root / SPEC_FILE).read_text())
    if spec.get("format") != FORMAT_NAME:
        raise UsageError(f"{root / SPEC_FILE}: format {spec.get('format')!r} is not {FORMAT_NAME!r}")
    model_spec = ModelSpec.model_validate(spec["model"])
    weights = {k: v.float() for k, v in load_weights(root / spec["weights"]).items()}
    return load_gpt(model_spec, weights), root / spec["tokenizer"]


def cast_weights(weights: dict, dtype: str) -> dict:
    import torch

    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r} is neither of {', '.join(DTYPES)}")
    target = torch.float32 if dtype == "fp32" else torch.bfloat16
    return {k: v.to(target) if v.is_floating_point() else v for k, v in weights.items()}


def save_weights(weights: dict, path: Path) -> Path:
    """One safetensors file (``format: pt`` in its metadata, as transformers expects)."""
    safetensors_torch = _safetensors_torch()
    safetensors_torch.save_file({k: v.contiguous() for k, v in weights.items()}, str(path), {"format": "pt"})
    return path


def load_weights(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"{path} does not exist; hint: give the --out directory of `orchestrator export`")
    return _safetensors_torch().load_file(str(path))


def _safetensors_torch():
    try:
        import safetensors.torch
    except ImportError:
        raise UsageError(
            "the safetensors package is not installed; hint: pip install 'gpt-orchestrator[hf]'"
        ) from None
    return safetensors.torch
