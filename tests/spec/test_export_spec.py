"""The `export:` section: formats once each, a register name only with mlflow, strict like the rest."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.spec.export import ExportSpec


def test_defaults_export_nothing_from_the_best_checkpoint_in_fp32():
    spec = ExportSpec()
    assert (spec.formats, spec.register_name, spec.checkpoint, spec.dtype) == ([], None, "best", "fp32")


def test_all_formats_with_a_register_name():
    spec = ExportSpec.model_validate({"formats": ["hf", "mlflow", "safetensors"], "register_name": "gpt"})
    assert spec.formats == ["hf", "mlflow", "safetensors"] and spec.register_name == "gpt"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"formats": ["onnx"]}, "Input should be 'hf', 'mlflow' or 'safetensors'"),
        ({"formats": ["hf", "hf"]}, "hf listed twice"),
        ({"formats": ["hf"], "register_name": "gpt"}, "add mlflow to formats"),
        ({"checkpoint": "first"}, "Input should be 'best' or 'latest'"),
        ({"dtype": "fp16"}, "Input should be 'fp32' or 'bf16'"),
        ({"format": ["hf"]}, "Extra inputs are not permitted"),
    ],
)
def test_wrong_sections_are_refused_with_the_fix(fields, message):
    with pytest.raises(ValidationError, match=message):
        ExportSpec.model_validate(fields)
