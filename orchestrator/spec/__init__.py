"""Run specs: typed models, strict YAML loading, cross-field checks and errors for people.

May import: nothing of the project but its base helpers (errors, text). Everything else reads specs.
"""

from orchestrator.spec.loader import Problem, SpecError, load_spec, parse_spec, resolve_references
from orchestrator.spec.models import RunSpec
from orchestrator.spec.schema import run_spec_schema

__all__ = [
    "Problem",
    "RunSpec",
    "SpecError",
    "load_spec",
    "parse_spec",
    "resolve_references",
    "run_spec_schema",
]
