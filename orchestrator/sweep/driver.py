"""The sweep's driver: the parent run, Ray Tune's experiment, and how every trial's run ends.

    plan = start_sweep(spec, spec_dir)       # the parent MLflow run (the sweep spec, the search
                                             #   space as params) and the sweep's directory
    outcome = run_sweep(plan, on_change)     # Tune runs the trials on the spec's Ray
    plan = reopen_sweep("RUN", tracking_uri) # after Ctrl-C or a crash: the same parent run ...
    outcome = resume_sweep(plan, on_change)  # ... and Tune's experiment restored from its directory

Tune's experiment lives in ``<sweep dir>/tune`` and each trial's run directory in ``<sweep dir>/<sweep
run name>-<trial id>``. Trials run one Ray Train run each, on as many workers as the spec says; as
many trials train at once as the cluster can place (``sweep.max_concurrent_trials`` to say fewer).
A trial's Tune actor reserves no CPU: it only waits on its Train run, whose workers hold the
resources (Tune needs a non-empty request, so it asks for one byte of Ray's memory resource).

When Tune is done, every trial run still RUNNING is finished (``orchestrator.sweep.settle``). The
parent run then gets the best trial (tags, ``best_<metric>``), the
sweep's report files, and its own status: FINISHED, FAILED when no trial produced the metric, or
KILLED when interrupted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.errors import PlanError, ResumeError, UsageError
from orchestrator.interrupts import sigterm_like_sigint
from orchestrator.lifecycle import existing_plan, plan_run, prepare_data, reopen_run, start_run
from orchestrator.lifecycle.lease import hold_lease
from orchestrator.lifecycle.run import refuse_if_driven
from orchestrator.plan import Plan
from orchestrator.spec import RunSpec
from orchestrator.spec.sweep import coverage
from orchestrator.sweep.report import BEST_SPEC, build_sweep_report, trials_table
from orchestrator.sweep.results import TrialResult, best_trial, ranked, read_trials
from orchestrator.sweep.settle import resume_command, settle_trials
from orchestrator.sweep.space import param_space, require_optuna, search_algorithm
from orchestrator.sweep.space import scheduler as trial_scheduler
from orchestrator.sweep.table import TABLES, SweepTable
from orchestrator.sweep.trial import SweepContext, run_trial
from orchestrator.text import first_line
from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import (
    BEST_PARAMS_TAG,
    BEST_TRIAL_TAG,
    FAILED_STATUS,
    FINISHED_STATUS,
    KILLED_STATUS,
    STOP_REASON_TAG,
    SWEEP_TAG,
    find_run,
    is_sweep_parent,
    set_tags,
)

log = logging.getLogger(__name__)

TUNE_DIR = "tune"  # Tune's experiment, inside the sweep's directory
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 1}  # see the module docstring
TUNE_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"  # Tune's newer console output prints even with verbose=0


@dataclass(frozen=True)
class SweepOutcome:
    plan: Plan  # the sweep's: its parent run id, directory, tracking store
    status: str  # the parent run's MLflow status
    trials: list[TrialResult]  # as MLflow holds them, oldest first
    best: TrialResult | None
    table: str  # the trials, best first
    report: list[Path]
    interrupted: bool
    concurrency: int


def start_sweep(spec: RunSpec, spec_dir: str | Path = ".", cwd: Path | None = None, runner=None) -> Plan:
    """Check that the spec can be swept here, plan it (data prepared once, with ``runner``: the
    trials whose values leave the data as it is read it) and create the sweep's directory and
    parent run, which stores the spec with its sweep section."""
    check_sweepable(spec)
    plan_run(spec, cwd)  # every check before the data is prepared
    plan = plan_run(spec, cwd, prepare_data(spec, cwd, runner))
    check_grace_period(plan)
    return start_run(plan, spec_dir, {SWEEP_TAG: str(spec.sweep.trial_count)})


def check_sweepable(spec: RunSpec) -> None:
    if not spec.sweep.enabled:
        raise UsageError(
            "the spec has no sweep.parameters, so there is nothing to search; hint: add a sweep "
            "section (see configs/sweep-lr.yaml), or train it with `orchestrator submit`"
        )
    if spec.cluster.backend != "ray-local":
        raise UsageError(
            f"sweeps run on backend ray-local (an embedded Ray, or a running cluster at "
            f"cluster.address), not {spec.cluster.backend}; hint: --set cluster.backend=ray-local, "
            "and for a cluster --set cluster.address=HOST:6379 (or ray://HOST:10001)"
        )
    if spec.sweep.search == "optuna":
        require_optuna()


def check_grace_period(plan: Plan) -> None:
    """ASHA's grace period within a trial's steps, also when those come from epochs (the spec's own
    check covers train.max_steps): Ray Tune would fail on it with an assertion of its own."""
    sweep, train = plan.spec.sweep, plan.spec.train
    grace = sweep.asha.grace_period or train.eval_interval
    if sweep.scheduler == "asha" and grace > plan.total_steps:
        raise PlanError(
            f"sweep.asha.grace_period: the grace period ({grace} steps) is longer than a trial "
            f"({plan.total_steps} steps); hint: set sweep.asha.grace_period to at most {plan.total_steps}"
        )


def reopen_sweep(run_ref: str, tracking_uri: str, cwd: Path | None = None) -> Plan:
    """The sweep's parent run, RUNNING again, to continue its Tune experiment."""
    run = find_run(tracking_uri, run_ref)
    if not is_sweep_parent(run):
        raise UsageError(
            f"run {run_ref} is not a sweep's parent run; hint: `orchestrator submit --resume` continues "
            "a training run"
        )
    plan = existing_plan(run.info.run_id, tracking_uri, (), cwd)
    if not (Path(plan.checkpoint_dir) / TUNE_DIR).is_dir():
        raise ResumeError(
            f"sweep {plan.run_name} has no Ray Tune experiment in {plan.checkpoint_dir}/{TUNE_DIR} to "
            "resume; hint: run this on the machine (or shared file system) where the sweep ran"
        )
    check_sweepable(plan.spec)
    refuse_if_driven(plan)  # a sweep still running: its driver holds the parent run's lease
    return reopen_run(run.info.run_id, tracking_uri, cwd)


def run_sweep(plan: Plan, on_change: Callable | None = None, cwd: Path | None = None) -> SweepOutcome:
    """Run the sweep with Ray Tune; ``on_change(table, rows)`` sees the live table at each change."""
    return _drive(plan, on_change, _new_tuner, cwd)


def resume_sweep(plan: Plan, on_change: Callable | None = None, cwd: Path | None = None) -> SweepOutcome:
    """Continue a sweep: finished trials are kept, unfinished ones continue from their checkpoints."""
    return _drive(plan, on_change, _restored_tuner, cwd)


def _drive(plan: Plan, on_change, make_tuner, cwd: Path | None) -> SweepOutcome:
    from launchers.ray_local import private_ray_token

    embedded = not plan.spec.cluster.address
    token = private_ray_token() if embedded else contextlib.nullcontext()
    with hold_lease(plan.checkpoint_store(), plan.run_id, plan.run_name), token:
        return _drive_on_ray(plan, on_change, make_tuner, cwd)


def _drive_on_ray(plan: Plan, on_change, make_tuner, cwd: Path | None) -> SweepOutcome:
    from launchers.ray_local import connect, wait_for_placement

    sweep = plan.spec.sweep
    context = _context(plan, cwd)
    table = SweepTable(sweep.metric, plan.total_steps, on_change)
    concurrency, interrupted = 0, False
    try:
        connect(plan, plan.spec.cluster.address, log_to_driver=False)
        sigterm_like_sigint()  # ray.init replaced the SIGTERM handler; Tune handles SIGINT
        wait_for_placement(plan)  # one trial's workers, or a clear message
        concurrency = sweep.max_concurrent_trials or trials_at_once(plan)
        interrupted = _fit(make_tuner(plan, context, concurrency), plan.run_id, table, sweep.trial_count)
    except KeyboardInterrupt:  # before Tune started, or a second Ctrl-C while it saved its state
        interrupted = True
    except Exception as exc:  # the cluster cannot place a trial, Tune itself failed, ...
        _shutdown_ray()
        settle_trials(plan, table, True, Path(context.cwd))
        _finish_parent(plan, FAILED_STATUS, {STOP_REASON_TAG: first_line(exc)})
        raise
    _shutdown_ray()
    return _conclude(plan, table, interrupted, concurrency, context)


def _fit(tuner, sweep_id: str, table: SweepTable, planned: int) -> bool:
    """Run Tune's experiment; whether it was interrupted (Tune's own Ctrl-C handling saves its
    state and stops every trial, so ``fit`` returns; trials it had not finished tell)."""
    TABLES[sweep_id] = table
    try:
        with _quiet_tune():
            tuner.fit()
    finally:
        TABLES.pop(sweep_id, None)
    ended = [row for row in table.rows.values() if row.completed]
    return bool(table.unfinished) or len(ended) < planned


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune's own messages (trial tracebacks, its restore hints) would contradict the table and the
    sweep's resume command; they stay visible with -v."""
    loggers = [logging.getLogger(name) for name in ("ray.tune", "ray.air", "ray.train")]
    levels = [logger.level for logger in loggers]
    output = os.environ.get(TUNE_OUTPUT_ENV)
    if not log.isEnabledFor(logging.DEBUG):
        os.environ[TUNE_OUTPUT_ENV] = "0"  # Tune's older reporter, silent with verbose=0
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if output is None:
            os.environ.pop(TUNE_OUTPUT_ENV, None)
        else:
            os.environ[TUNE_OUTPUT_ENV] = output


def trials_at_once(plan: Plan) -> int:
    """How many trials' workers the cluster holds at once (at least one)."""
    import ray

    from launchers.ray_local import worker_resources

    total = ray.cluster_resources()
    per_trial = {name: amount * plan.world_size for name, amount in worker_resources(plan).items()}
    fits = [int(total.get(name, 0) // amount) for name, amount in per_trial.items() if amount > 0]
    return max(1, min(fits, default=1))


def _context(plan: Plan, cwd: Path | None) -> SweepContext:
    data = plan.spec.public_dump()
    del data["sweep"]
    return SweepContext(
        spec_text=yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100),
        source=f"sweep {plan.run_name}",
        cwd=str((cwd or Path.cwd()).resolve()),
        spec_dir=str((cwd or Path.cwd()).resolve()),
        # with its `${env:...}` references: what goes through Ray may reach its disk (spilled
        # objects, Tune's saved state); each trial resolves them in its own environment
        tracking_uri=plan.spec.with_references(plan.tracking_uri),
        parent_run_id=plan.run_id,
        sweep_run_name=plan.run_name,
        sweep_dir=plan.checkpoint_dir,
    )


def _trainable(context: SweepContext):
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, context=context), TRIAL_DRIVER_RESOURCES)


def _new_tuner(plan: Plan, context: SweepContext, concurrency: int):
    from ray import tune

    from orchestrator.sweep.progress import SweepProgress

    sweep = plan.spec.sweep
    log.info("running at most %d trial(s) at once", concurrency)
    return tune.Tuner(
        _trainable(context),
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.direction,
            search_alg=search_algorithm(sweep, concurrency),
            scheduler=trial_scheduler(sweep, plan),
            num_samples=sweep.num_samples,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=plan.checkpoint_dir,
            verbose=0,
            callbacks=[SweepProgress(plan.run_id, sweep.metric, plan.checkpoint_dir, plan.run_name)],
        ),
    )


def _restored_tuner(plan: Plan, context: SweepContext, concurrency: int):
    """Tune's saved experiment (its search, scheduler state, concurrency and callbacks included)."""
    from ray import tune

    path = str(Path(plan.checkpoint_dir) / TUNE_DIR)
    return tune.Tuner.restore(
        path, trainable=_trainable(context), resume_unfinished=True, resume_errored=False
    )


def _conclude(
    plan: Plan, table: SweepTable, interrupted: bool, concurrency: int, context: SweepContext
) -> SweepOutcome:
    settle_trials(plan, table, interrupted, Path(context.cwd))
    sweep = plan.spec.sweep
    trials = read_trials(plan.tracking_uri, plan.run_id, sweep.metric)
    best = best_trial(trials, sweep.direction)
    if best is not None:
        set_tags(
            plan.tracking_uri,
            plan.run_id,
            {BEST_TRIAL_TAG: best.run_id, BEST_PARAMS_TAG: json.dumps(best.params)},
        )
        client(plan.tracking_uri).log_metric(plan.run_id, f"best_{sweep.metric}", best.final)
    report, text = _report(plan, trials, best)
    if best is not None and report:
        client(plan.tracking_uri).log_artifact(plan.run_id, str(Path(plan.checkpoint_dir) / BEST_SPEC))
    status = KILLED_STATUS if interrupted else FINISHED_STATUS if best is not None else FAILED_STATUS
    reason = {STOP_REASON_TAG: f"interrupted; continue with: {resume_command(plan)}"} if interrupted else {}
    _finish_parent(plan, status, reason)
    return SweepOutcome(plan, status, trials, best, text, report, interrupted, concurrency)


def _report(plan: Plan, trials: list[TrialResult], best: TrialResult | None) -> tuple[list[Path], str]:
    """The sweep's report files and table; a report that cannot be written does not fail the sweep."""
    if not trials:
        return [], ""
    try:
        return build_sweep_report(plan.tracking_uri, plan.run_id)
    except Exception as exc:
        log.warning(
            "could not write the sweep's report (%s); `orchestrator report %s` tries again",
            first_line(exc),
            plan.run_id,
        )
        return [], trials_table(ranked(trials, plan.spec.sweep.direction), plan.spec.sweep.metric, best)


def _finish_parent(plan: Plan, status: str, tags: dict[str, str]) -> None:
    from orchestrator.track.finish import finish_run

    if tags:
        set_tags(plan.tracking_uri, plan.run_id, tags)
    finish_run(plan.tracking_uri, plan.run_id, status, plan.checkpoint_dir)


def describe_sweep(plan: Plan) -> str:
    """What the sweep will do, printed before it starts."""
    sweep = plan.spec.sweep
    asha = sweep.asha
    scheduler = (
        f"asha (grace period {asha.grace_period or plan.spec.train.eval_interval} steps, reduction "
        f"factor {asha.reduction_factor})"
        if sweep.scheduler == "asha"
        else "none (every trial trains to its end)"
    )
    started = f"{plan.run_name} (MLflow run {plan.run_id})" if plan.run_id else "(not started)"
    lines = [
        f"sweep      {started}",
        f"search     {sweep.search}, {sweep.trial_count} trial(s), each {plan.total_steps} steps on "
        f"{plan.world_size} worker(s)",
        f"metric     {sweep.metric} ({sweep.direction}), scheduler {scheduler}",
        *(
            f"parameter  {path}: {space.describe()} ({coverage(space)})"
            for path, space in sweep.parameters.items()
        ),
        f"directory  {plan.checkpoint_dir}",
    ]
    return plan.spec.redact("\n".join(lines))
