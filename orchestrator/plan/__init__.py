"""Turn a RunSpec into a Plan: world size, DeepSpeed config, data, directories, tracking."""

from orchestrator.plan.deepspeed_config import build_deepspeed_config
from orchestrator.plan.plan import DataPlan, NotRunnableHere, Plan, PlanError, build_plan, plan_as_dict

__all__ = [
    "DataPlan",
    "NotRunnableHere",
    "Plan",
    "PlanError",
    "build_deepspeed_config",
    "build_plan",
    "plan_as_dict",
]
