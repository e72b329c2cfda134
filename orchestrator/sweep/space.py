"""The ``sweep`` section in Ray Tune's terms: the search space, the search algorithm and the scheduler;
and a sampled value as the ``--set`` text that applies it to the spec.

>>> override("optimizer.lr", 0.00031)
'optimizer.lr=0.00031'
>>> override("optimizer.betas", [0.9, 0.95])
'optimizer.betas=[0.9, 0.95]'
"""

from __future__ import annotations

from typing import Any

import yaml

from orchestrator.errors import NotRunnableHere
from orchestrator.plan import Plan
from orchestrator.spec.sweep import SearchSpace, SweepSpec

PARAMS_KEY = "params"  # Tune's config of a trial: {"params": {dotted path: value}}


def param_space(sweep: SweepSpec) -> dict[str, Any]:
    return {PARAMS_KEY: {path: _domain(space) for path, space in sweep.parameters.items()}}


def _domain(space: SearchSpace):
    from ray import tune

    if space.kind == "choice":
        return tune.choice(space.values)
    if space.kind == "grid":
        return tune.grid_search(space.values)
    low, high = space.bounds
    if space.kind == "randint":
        return tune.randint(low, high + 1)  # Tune's upper bound is exclusive; the spec's is not
    return tune.uniform(low, high) if space.kind == "uniform" else tune.loguniform(low, high)


def search_algorithm(sweep: SweepSpec, concurrency: int):
    """Random and grid search are Tune's basic variant generator; optuna is Optuna's TPE sampler.
    Either runs at most ``concurrency`` trials at once (Tune ignores ``TuneConfig``'s limit for a
    generator passed in, so it is set here)."""
    if sweep.search == "optuna":
        require_optuna()
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=sweep.seed), max_concurrent=concurrency)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=concurrency)


def require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise NotRunnableHere(
            "sweep.search: optuna needs the optuna package, which is not installed here; hint: "
            "pip install optuna, or use search: random"
        ) from None


def scheduler(sweep: SweepSpec, plan: Plan):
    """None (every trial trains to its end) or ASHA on the trials' evaluations, by training step."""
    if sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="step",
        grace_period=sweep.asha.grace_period or plan.spec.train.eval_interval,
        reduction_factor=sweep.asha.reduction_factor,
        # Past the last step: ASHA stops every trial that reaches max_t, which would kill a trial
        # that is done training while it writes its final checkpoint.
        max_t=plan.total_steps + 1,
    )


def plain(value: Any) -> Any:
    """A sampled value as plain Python (Tune samples numpy scalars)."""
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value.item() if hasattr(value, "item") else value


def override(path: str, value: Any) -> str:
    """``path=value`` as `--set` reads it (YAML: a float keeps its dot, so it stays a float)."""
    text = yaml.safe_dump(plain(value), default_flow_style=True, width=10**6).strip()
    return f"{path}={text.removesuffix('...').strip()}"


def describe_params(params: dict[str, Any]) -> str:
    return " ".join(f"{path}={_short(value)}" for path, value in params.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
