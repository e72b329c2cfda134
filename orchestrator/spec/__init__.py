"""Run specs: typed models, strict YAML loading and errors for people."""

from orchestrator.spec.loader import Problem, SpecError, load_spec, parse_spec
from orchestrator.spec.models import RunSpec
from orchestrator.spec.schema import run_spec_schema

__all__ = ["Problem", "RunSpec", "SpecError", "load_spec", "parse_spec", "run_spec_schema"]
