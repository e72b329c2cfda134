"""One sweep trial, as Ray Tune runs it: an orchestrator run of the spec with the trial's values.

``run_trial`` is the Tune function trainable. It applies the sampled values to the sweep's spec as
``--set`` would, plans the run and starts it through the run lifecycle (its own directory under the
sweep's, its own MLflow run, a child of the sweep's parent run), and trains it with Ray Train in the
trial (every evaluation goes on to Tune). When Tune restores an unfinished trial (a resumed sweep),
the same run continues from its latest complete checkpoint.

A trial finishes its run itself when it trained to the end. Otherwise the sweep's driver does: only
the driver knows whether Tune stopped the trial (ASHA, Ctrl-C) or it failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import NotFoundError, OrchestratorError
from orchestrator.lifecycle import finish, plan_run, prepare_data, reopen_run, start_run
from orchestrator.plan import Plan
from orchestrator.spec import parse_spec
from orchestrator.sweep.space import PARAMS_KEY, override, plain
from orchestrator.sweep.table import run_dir_name
from orchestrator.track.runs import (
    FINISHED_STATUS,
    PARENT_RUN_TAG,
    TRIAL_ID_TAG,
    TRIAL_PARAMS_TAG,
    JobState,
    find_run,
)


class TrialFailed(OrchestratorError):
    """The trial's training failed (a NaN stop, an out-of-memory kill, ...): the message says why."""


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs from the sweep's driver (plain, picklable values)."""

    spec_text: str  # the sweep's resolved spec without its sweep section, secrets as references
    source: str  # the sweep's run name, for messages
    cwd: str  # where relative paths of the spec are resolved (the driver's working directory)
    spec_dir: str  # where the git commit tag of trial runs is read (the sweep's working directory)
    tracking_uri: str  # secrets as `${env:...}` references: ``store()`` resolves them in the trial
    parent_run_id: str
    sweep_run_name: str
    sweep_dir: str  # every trial's directory is in it

    def trial_run_name(self, trial_id: str) -> str:
        return run_dir_name(self.sweep_run_name, trial_id)

    def store(self) -> str:
        """The tracking URI, resolved in this process's environment."""
        from orchestrator.spec import resolve_references

        return resolve_references(self.tracking_uri)


def run_trial(config: dict[str, Any], context: SweepContext) -> None:
    from ray import tune

    from launchers.ray_local import TuneTrialLauncher

    trial_id = tune.get_context().get_trial_id()
    params = {path: plain(value) for path, value in config[PARAMS_KEY].items()}
    plan = trial_plan(context, trial_id, params)
    if plan is None:
        return
    handle = TuneTrialLauncher().submit(plan)
    if handle.state is not JobState.SUCCEEDED:
        raise TrialFailed(handle.error or "the trial's training failed")
    finish(plan, handle)


def trial_plan(context: SweepContext, trial_id: str, params: dict[str, Any]) -> Plan | None:
    """The trial's run: new, or the one a resumed sweep continues (None: it had finished already)."""
    name = context.trial_run_name(trial_id)
    tracking_uri = context.store()
    existing = _find(tracking_uri, name)
    cwd = Path(context.cwd)
    if existing is None:
        spec = parse_spec(
            context.spec_text, f"trial {trial_id} of {context.source}", trial_overrides(context, name, params)
        )
        # the sweep prepared its spec's data; a trial whose values change the data prepares its own
        plan = replace(plan_run(spec, cwd, prepare_data(spec, cwd)), report_to_ray=True)
        tags = {
            PARENT_RUN_TAG: context.parent_run_id,
            TRIAL_ID_TAG: trial_id,
            TRIAL_PARAMS_TAG: json.dumps(params),
        }
        return start_run(plan, context.spec_dir, tags)
    if existing.info.status == FINISHED_STATUS:  # it ended after the sweep's last saved state
        _report_last_evaluation(existing)
        return None
    return replace(reopen_run(existing.info.run_id, tracking_uri, cwd), report_to_ray=True)


def trial_overrides(context: SweepContext, run_name: str, params: dict[str, Any]) -> list[str]:
    """The trial's values, its run name, and its directory inside the sweep's (quoted as JSON,
    which YAML reads as the same string)."""
    return [
        *(override(path, value) for path, value in params.items()),
        f"tracking.run_name={json.dumps(run_name)}",
        f"checkpoint.dir={json.dumps(context.sweep_dir)}",
    ]


def _find(tracking_uri: str, run_name: str):
    try:
        return find_run(tracking_uri, run_name)
    except NotFoundError:
        return None


def _report_last_evaluation(run) -> None:
    from ray import tune

    metrics = run.data.metrics
    if "val_loss" in metrics:
        names = ("val_loss", "val_perplexity", "val_accuracy")
        tune.report(
            {
                "step": int(run.data.params.get("plan.total_steps", 0)),
                **{n: metrics[n] for n in names if n in metrics},
            }
        )
