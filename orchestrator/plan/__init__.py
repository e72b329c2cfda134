"""Turn a RunSpec into a Plan: world size, DeepSpeed config, data, directories, the memory plan.

May import: spec, data, storage. Never the tracker, the worker, launchers or the CLI: a Plan is plain data
that everything above reads.
"""

from orchestrator.errors import NotRunnableHere, PlanError
from orchestrator.plan.data import DataPlan
from orchestrator.plan.deepspeed_config import build_deepspeed_config
from orchestrator.plan.identity import RunIdentity
from orchestrator.plan.plan import (
    Plan,
    build_plan,
    plan_as_dict,
    resolve_tracking_uri,
    tracking_uri_here,
)

__all__ = [
    "DataPlan",
    "NotRunnableHere",
    "Plan",
    "PlanError",
    "RunIdentity",
    "build_deepspeed_config",
    "build_plan",
    "plan_as_dict",
    "resolve_tracking_uri",
    "tracking_uri_here",
]
