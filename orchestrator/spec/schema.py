"""JSON Schema of run specs, for editors (the YAML language server) and other tools."""

from __future__ import annotations

from typing import Any

from orchestrator.spec.models import RunSpec


def run_spec_schema() -> dict[str, Any]:
    schema = RunSpec.model_json_schema(mode="validation")
    schema["title"] = "gpt-orchestrator run spec"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
