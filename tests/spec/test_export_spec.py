"""The `export:` section: formats once each, a register name only with mlflow, strict like the rest."""

from __future__ import annotations

import json

import pytest

from orchestrator.spec import SpecError, parse_spec
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
        ({"format": ["hf"]}, "did you mean `formats`?"),
    ],
)
def test_wrong_sections_are_refused_with_the_fix(fields, message):
    with pytest.raises(SpecError) as refused:
        parse_spec(f"name: x\nexport: {json.dumps(fields)}\n", "spec.yaml")
    assert message in refused.value.render() and "spec.yaml:2 export." in refused.value.render()
