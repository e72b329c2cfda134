"""Trained models out of the orchestrator: Hugging Face, MLflow and safetensors exports of a run.

A run's checkpoint is a folder of DeepSpeed ZeRO shards; ``export_run`` consolidates it with
DeepSpeed's own utilities (after checking that its pickles hold only data, see ``weights``) and
writes one format:

- ``hf``: a GPT-2 directory ``transformers`` loads with no custom code (``hf``);
- ``mlflow``: that directory logged to the run as a pyfunc model and, with ``register_name``,
  registered as a new model version (``mlflow_model``);
- ``safetensors``: the weights under this project's names plus ``model_spec.json`` (``tensors``).

It takes plain inputs, so it needs no run lookup::

    export_run(spec, "checkpoints/quickstart-20250101-120000", tokenizer_path, "hf", "out/hf")
    export_run(spec, ckpt_dir, tokenizer_path, "mlflow", tracking_uri=uri, run_id=run_id,
               register_name="quickstart-gpt")

``export_after_run`` is the end-of-run hook: every format of the spec's ``export:`` section, from one
consolidation, into ``<checkpoint dir>/export/<format>``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import UsageError

log = logging.getLogger(__name__)
FORMATS = ("hf", "mlflow", "safetensors")
EXPORT_DIR = "export"  # inside the run's checkpoint directory, for the end-of-run export


@dataclass(frozen=True)
class ExportResult:
    format: str
    out_dir: Path | None  # None: mlflow only, nothing kept on disk
    step: int  # the checkpoint's optimizer step
    checkpoint: Path
    files: list[Path] = field(default_factory=list)
    model_uri: str | None = None  # mlflow: models:/<model id>
    registered_name: str | None = None
    registered_version: str | None = None


@dataclass(frozen=True)
class _Request:
    """What every format of one export shares."""

    spec: object  # RunSpec
    tokenizer_path: Path
    dtype: str = "fp32"
    tracking_uri: str | None = None
    run_id: str | None = None
    register_name: str | None = None


def export_run(
    spec,
    checkpoint_dir: str | Path,
    tokenizer_path: str | Path,
    fmt: str,
    out_dir: str | Path | None = None,
    *,
    which: str = "best",
    tracking_uri: str | None = None,
    run_id: str | None = None,
    register_name: str | None = None,
    dtype: str = "fp32",
    trust_checkpoint: bool = False,
) -> ExportResult:
    """Export the run's `which` (best|latest) checkpoint as `fmt` into `out_dir`.

    mlflow needs ``tracking_uri`` and ``run_id``; its ``out_dir`` is optional (where to keep the
    Hugging Face directory it logs). ``register_name`` is for mlflow only. ``trust_checkpoint``
    loads pickles that hold more than data (see ``weights``): only for checkpoints you trust."""
    request = _Request(spec, Path(tokenizer_path), dtype, tracking_uri, run_id, register_name)
    _check_request(request, {fmt: None if out_dir is None else Path(out_dir)})
    model, info = load_checkpoint_model(spec, checkpoint_dir, which, trust_checkpoint)
    return _write(fmt, model, info, request, None if out_dir is None else Path(out_dir))


def export_after_run(
    export_spec,
    spec,
    run_dir: str | Path,
    checkpoints,
    tokenizer_path: str | Path,
    tracking_uri: str,
    run_id: str,
) -> list[ExportResult]:
    """The end-of-run export: each of ``export_spec.formats`` (an ``ExportSpec``) into
    ``<run_dir>/export/<format>``, from one consolidation of a checkpoint of ``checkpoints`` (the
    run's checkpoint location: a path or a ``Store``); mlflow logs the hf directory when hf is
    exported too (and otherwise a temporary one)."""
    if not export_spec.formats:
        return []
    root = Path(run_dir) / EXPORT_DIR
    out_dirs = {fmt: root / fmt for fmt in export_spec.formats if fmt != "mlflow"}
    if "mlflow" in export_spec.formats:
        out_dirs["mlflow"] = out_dirs.get("hf")
    request = _Request(
        spec, Path(tokenizer_path), export_spec.dtype, tracking_uri, run_id, export_spec.register_name
    )
    _check_request(request, out_dirs)
    model, info = load_checkpoint_model(spec, checkpoints, export_spec.checkpoint)
    ordered = sorted(out_dirs, key=FORMATS.index)  # hf before mlflow, which logs its directory
    return [_write(fmt, model, info, request, out_dirs[fmt], reuse_hf="hf" in out_dirs) for fmt in ordered]


def load_checkpoint_model(spec, checkpoint_dir: str | Path, which: str = "best", trust_checkpoint=False):
    """(GPT in eval mode, CheckpointInfo) of the run's best or latest complete checkpoint."""
    from orchestrator.export.weights import consolidated_state_dict, load_gpt, pick_checkpoint

    info = pick_checkpoint(checkpoint_dir, which)
    return load_gpt(spec.model, consolidated_state_dict(info, trust_checkpoint)), info


def _check_request(request: _Request, out_dirs: dict[str, Path | None]) -> None:
    """Refuse a request that cannot succeed before any shard is read."""
    from orchestrator.export.hf import check_gpt2_compatible
    from orchestrator.export.tensors import DTYPES

    unknown = [fmt for fmt in out_dirs if fmt not in FORMATS]
    if unknown:
        raise UsageError(f"export format {', '.join(unknown)} is unknown; choose from {', '.join(FORMATS)}")
    if request.dtype not in DTYPES:
        raise UsageError(f"dtype {request.dtype!r} is neither of {', '.join(DTYPES)}")
    for fmt, out in out_dirs.items():
        if fmt != "mlflow" and out is None:
            raise UsageError(f"export --format {fmt} needs --out DIR")
        if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"{out} exists and is not an empty directory; hint: choose a new --out")
    if "mlflow" in out_dirs and not (request.tracking_uri and request.run_id):
        raise UsageError("export --format mlflow needs the run's tracking URI and MLflow run id")
    if request.register_name is not None and "mlflow" not in out_dirs:
        raise UsageError("--register NAME registers an MLflow model version: add --format mlflow")
    if {"hf", "mlflow"} & set(out_dirs):
        check_gpt2_compatible(request.spec.model)


def _write(fmt: str, model, info, request: _Request, out: Path | None, reuse_hf: bool = False):
    from orchestrator.export.hf import write_hf_directory
    from orchestrator.export.tensors import write_safetensors_directory

    spec = request.spec
    if fmt == "mlflow":
        return _write_mlflow(model, info, request, out, reuse_hf)
    if fmt == "hf":
        files = write_hf_directory(model, spec.model, request.tokenizer_path, out, request.dtype)
    else:
        source = _source(info, request)
        files = write_safetensors_directory(
            model, spec.model, request.tokenizer_path, out, request.dtype, source
        )
    log.info("exported %s (step %d) as %s to %s", info.path, info.step, fmt, out)
    return ExportResult(fmt, out, info.step, info.path, files)


def _write_mlflow(model, info, request: _Request, out: Path | None, reuse_hf: bool) -> ExportResult:
    from orchestrator.export.hf import write_hf_directory
    from orchestrator.export.mlflow_model import log_model_to_run

    with tempfile.TemporaryDirectory(prefix="orchestrator-export-") as scratch:
        hf_dir = out if out is not None else Path(scratch) / "hf"
        files = []
        if not reuse_hf:
            spec, tokenizer = request.spec, request.tokenizer_path
            files = write_hf_directory(model, spec.model, tokenizer, hf_dir, request.dtype)
        logged = log_model_to_run(
            hf_dir, request.tracking_uri, request.run_id, request.register_name, _source(info, request)
        )
    return ExportResult(
        "mlflow", out, info.step, info.path, files, logged.model_uri, logged.registered_name, logged.version
    )


def _source(info, request: _Request) -> dict:
    """Where the weights came from, recorded with the export."""
    source = {"checkpoint": str(info.path), "step": info.step, "zero_stage": info.zero_stage}
    if request.run_id:
        source["run_id"] = request.run_id
    return source
