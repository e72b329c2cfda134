"""Start, run, finish and resume one run.

plan = plan_run(load_spec("configs/quickstart.yaml", ["train.epochs=1"]))
plan = start_run(plan, spec_dir="configs")     # run directory + MLflow run (stores spec.yaml)
outcome = execute(plan, launcher)              # foreground launchers: launch, wait, finish
handle = submit_detached(plan, launcher)       # detached launchers: the job's driver finishes

resumed = resume_run("quickstart-20250101-120000", tracking_uri, ["train.eval_interval=50"])
outcome = execute(resumed.plan, launcher)
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import NotFoundError, PlanError, ResumeError, UntrustedInput
from orchestrator.interrupts import sigterm_as_interrupt
from orchestrator.lifecycle.data import known_data, recorded_data
from orchestrator.lifecycle.lease import hold_lease
from orchestrator.lifecycle.places import check_run_directory, make_run_directory, remove_created
from orchestrator.lifecycle.post_mortem import write_post_mortem
from orchestrator.lifecycle.resume_rules import check_resume_overrides
from orchestrator.masking import mask_uri_passwords
from orchestrator.plan import Plan, build_plan, tracking_uri_here
from orchestrator.plan.data import DataPlan
from orchestrator.plan.identity import checkpoint_root, identity_of_record, runs_root
from orchestrator.spec import RunSpec, parse_spec
from orchestrator.spec.models import RUN_NAME_PATTERN
from orchestrator.text import error_summary, first_line
from orchestrator.track.runs import (
    RESUME_OVERRIDES_TAG,
    RUNNING_STATUS,
    SPEC_ARTIFACT,
    SPEC_SHA256_TAG,
    STOP_REASON_TAG,
    JobHandle,
    JobState,
    find_record,
    read_stored_spec,
    set_tags,
    write_run_record,
)
from orchestrator.train.checkpoint import CheckpointInfo, check_compatible, latest_complete_checkpoint
from orchestrator.train.safe_load import require_inside, require_under

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as the lifecycle recorded it."""

    state: JobState
    error: str | None = None
    post_mortem: Path | None = None
    tracked: bool = True  # False: MLflow could not be finished; the journal waits for `sync`
    interrupted: bool = False  # Ctrl-C or SIGTERM

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED and self.tracked


@dataclass(frozen=True)
class Resumed:
    plan: Plan
    checkpoint: CheckpointInfo
    overrides: tuple[str, ...]  # the `--set` values applied on top of the stored spec


def plan_run(spec: RunSpec, cwd: Path | None = None, data: DataPlan | None = None) -> Plan:
    """The plan of a new run, checked as far as it can be without starting anything. ``data``: the
    prepared dataset (``prepare_data``); without it, what is known (``validate``: maybe an estimate)."""
    plan = build_plan(spec, data or known_data(spec, cwd), None, cwd)
    if spec.schedule.warmup_steps >= plan.total_steps:  # the spec's check sees train.max_steps only
        estimated = " (an estimate: the data is not prepared yet)" if plan.data.estimated else ""
        raise PlanError(
            f"schedule.warmup_steps: warmup ({spec.schedule.warmup_steps} steps) must be shorter than "
            f"the run, which the plan makes {plan.total_steps} steps{estimated} ({plan.steps_per_epoch} "
            f"per epoch x {spec.train.epochs} epoch(s), train.max_steps {spec.train.max_steps}); hint: "
            f"warm up for about 5-10% of the run (schedule.warmup_steps: {max(1, plan.total_steps // 15)})"
        )
    if plan.local_run_dir:
        check_run_directory(spec, plan.checkpoint_dir)
    if spec.deepspeed.raw_config:
        from orchestrator.plan.deepspeed_config import check_with_deepspeed

        verdict = check_with_deepspeed(plan.deepspeed_config)
        if verdict:
            raise PlanError(
                f"DeepSpeed refuses deepspeed.raw_config: {verdict}; hint: fix or remove those keys"
            )
    return plan


def start_run(plan: Plan, spec_dir: str | Path = ".", tags: dict[str, str] | None = None) -> Plan:
    """Create the run directory and the MLflow run (which stores the resolved spec); the plan with
    its run id. ``spec_dir``: where the spec file lives (for the git commit tag); ``tags``: more
    MLflow tags (a sweep trial's parent run). A failure or an interrupt before the run exists leaves
    no directory behind; one after it ends the run FAILED."""
    from orchestrator.track.mlflow_run import create_run, log_dataset
    from orchestrator.track.runs import store_errors

    with sigterm_as_interrupt():
        created = make_run_directory(plan.checkpoint_dir) if plan.local_run_dir else []
        try:
            with store_errors(plan.tracking_uri):
                plan = plan.with_run_id(create_run(plan, spec_dir, tags))
        except BaseException:
            remove_created(created)
            raise
        log_dataset(plan)
        if plan.local_run_dir:
            try:
                write_run_record(plan.checkpoint_dir, plan.run_id)
            except OSError as exc:
                error = f"could not write the run record in {plan.checkpoint_dir} ({exc.strerror})"
                finish(plan, JobHandle("", plan.run_id, JobState.FAILED, error))
                raise PlanError(f"{error}; hint: free space or fix the permissions there") from None
    return plan


def existing_plan(
    run_ref: str, tracking_uri: str, overrides: list[str] = (), cwd: Path | None = None
) -> Plan:
    """The plan of a run that exists (by MLflow run id or name): its stored resolved spec (plus
    ``overrides``), its name, directory, tracking store and MLflow run."""
    record = find_record(tracking_uri, run_ref)
    if not record.checkpoint_dir:
        raise NotFoundError(
            f"MLflow run {record.run_id} was not started by this orchestrator (no directory tag)"
        )
    stored = read_stored_spec(tracking_uri, record.run_id)
    _check_stored_spec(record, stored)
    spec = parse_spec(stored, f"{SPEC_ARTIFACT} of run {record.run_name}", list(overrides))
    _check_run_identity(record, spec, cwd)
    return build_plan(spec, recorded_data(spec, cwd), identity_of_record(record, tracking_uri), cwd)


def _check_stored_spec(record, stored: str) -> None:
    """The stored spec is the one the run trained on: its hash is the run's tag, set when it was
    stored. An edited file (its model a different size, say) would fail deep in the workers."""
    actual = hashlib.sha256(stored.encode()).hexdigest()
    if record.spec_sha256 and actual != record.spec_sha256:
        raise UntrustedInput(
            f"the {SPEC_ARTIFACT} stored with run {record.run_name} is not the one the run stored: its "
            f"SHA-256 is {actual[:16]}..., the run's tag {SPEC_SHA256_TAG} says "
            f"{record.spec_sha256[:16]}... (the artifact was edited); hint: restore the run's "
            f"{SPEC_ARTIFACT} artifact as it was, or train the edited spec as a new run (orchestrator "
            "submit FILE)"
        )


def _check_run_identity(record, spec: RunSpec, cwd: Path | None) -> None:
    """The run's name and directory come from MLflow tags, which anyone who can write to the store
    can change: its checkpoints (pickles) are only loaded from inside where the spec keeps its runs."""
    if not re.fullmatch(RUN_NAME_PATTERN, record.run_name):
        raise UntrustedInput(
            f"MLflow run {record.run_id} is named {record.run_name!r}, which is not a run name this "
            "orchestrator gives (a directory name)"
        )
    here = (cwd or Path.cwd()).resolve()
    require_inside(record.checkpoint_dir, runs_root(spec, here), "run directory")
    if record.checkpoint_uri and record.checkpoint_uri != record.checkpoint_dir:
        require_under(record.checkpoint_uri, checkpoint_root(spec, here))


def resume_run(
    run_ref: str, tracking_uri: str, overrides: list[str] = (), cwd: Path | None = None
) -> Resumed:
    """The same run again (same MLflow run, same directory), from its stored resolved spec plus the
    overrides that are safe to change on resume; refuses the others and what the checkpoint forbids."""
    check_resume_overrides(overrides)
    overrides = _with_elastic_batch(run_ref, tracking_uri, list(overrides))
    plan = existing_plan(run_ref, tracking_uri, overrides, cwd)
    refuse_if_driven(plan)
    checkpoint = latest_complete_checkpoint(plan.checkpoint_store())
    if checkpoint is None:
        raise ResumeError(
            f"run {plan.run_name} has no complete checkpoint in {plan.checkpoint_uri} to resume from; "
            "hint: submit the spec again as a new run, with checkpoint.interval set"
        )
    check_compatible(checkpoint, plan.world_size, plan.spec.deepspeed.zero_stage)
    _record_resume(plan, overrides)
    return Resumed(plan, checkpoint, tuple(overrides))


def _with_elastic_batch(run_ref: str, tracking_uri: str, overrides: list[str]) -> list[str]:
    """A changed worker count keeps the run's global batch (gradient accumulation rescaled)."""
    if not any(text.startswith("cluster.num_workers=") for text in overrides):
        return overrides
    from orchestrator.lifecycle.resume_rules import elastic_overrides

    record = find_record(tracking_uri, run_ref)
    stored = read_stored_spec(tracking_uri, record.run_id)
    source = f"{SPEC_ARTIFACT} of run {record.run_name}"
    return elastic_overrides(
        parse_spec(stored, source), overrides, lambda more: parse_spec(stored, source, more)
    )


def reopen_run(run_ref: str, tracking_uri: str, cwd: Path | None = None) -> Plan:
    """A run that ended before its last step (killed, failed, its driver gone), running again as it
    was: same MLflow run (RUNNING again), directory and stored spec. Its workers restore its latest
    complete checkpoint, or start from step 0 without one (a sweep trial stopped before its first
    checkpoint: Ray Tune restarts the trial, which is still the same run)."""
    from orchestrator.track.mlflow_run import client
    from orchestrator.track.runs import get_run

    plan = existing_plan(run_ref, tracking_uri, (), cwd)
    checkpoint = latest_complete_checkpoint(plan.checkpoint_store())
    if checkpoint is not None:
        check_compatible(checkpoint, plan.world_size, plan.spec.deepspeed.zero_stage)
    _record_resume(plan, ())
    if STOP_REASON_TAG in get_run(tracking_uri, plan.run_id).data.tags:  # no longer why it stopped
        client(tracking_uri).delete_tag(plan.run_id, STOP_REASON_TAG)
    return plan


def _record_resume(plan: Plan, overrides) -> None:
    from orchestrator.track.mlflow_run import client

    mlflow = client(plan.tracking_uri)
    if overrides:  # the run's spec is now this one: a later resume or generate reads it
        mlflow.log_text(plan.run_id, plan.spec_text, SPEC_ARTIFACT)
        set_tags(
            plan.tracking_uri,
            plan.run_id,
            {SPEC_SHA256_TAG: plan.spec_sha256, RESUME_OVERRIDES_TAG: " ".join(overrides)},
        )
    mlflow.update_run(plan.run_id, status=RUNNING_STATUS)


def execute(plan: Plan, launcher) -> Outcome:
    """Launch through a foreground launcher and finish the run, whatever happens: FINISHED, FAILED,
    or KILLED when Ctrl-C or SIGTERM interrupts it (Ray Train's own Ctrl-C handler ends in
    SystemExit after it aborted the workers). The run's lease is held meanwhile: a second driver of
    the same run is refused (RunInUse) before anything starts."""
    with hold_lease(plan.checkpoint_store(), plan.run_id, plan.run_name):
        try:
            with sigterm_as_interrupt():
                handle = launcher.submit(plan)
        except (KeyboardInterrupt, SystemExit):
            log.warning("interrupted: marking the MLflow run KILLED")
            return finish(plan, JobHandle(launcher.name, plan.run_id, JobState.STOPPED, "interrupted"))
        except BaseException as exc:
            finish(plan, JobHandle(launcher.name, plan.run_id, JobState.FAILED, first_line(exc)))
            raise
        return finish(plan, handle)


def refuse_if_driven(plan: Plan) -> None:
    """RunInUse when a live process drives the run (it holds the run's lease)."""
    from orchestrator.lifecycle.lease import LEASE_FILE, RunInUse, in_use_message, live_holder

    store = plan.checkpoint_store()
    holder = live_holder(store, plan.run_id)
    if holder is not None:
        raise RunInUse(in_use_message(plan.run_name, holder, store.describe(LEASE_FILE)))


def submit_detached(plan: Plan, launcher) -> JobHandle:
    """Hand the run to a detached launcher (its driver on the cluster finishes it) and tag the run
    with where the job is. A submission the backend refuses ends the run FAILED."""
    try:
        handle = launcher.submit(plan)
    except BaseException as exc:
        finish(plan, JobHandle(launcher.name, plan.run_id, JobState.FAILED, first_line(exc)))
        raise
    set_tags(plan.tracking_uri, plan.run_id, launcher.job_tags(handle))
    return handle


def settle_detached(plan: Plan, handle: JobHandle) -> None:
    """A detached job that ended before its driver could finish the run (refused by the backend, its
    cluster never ready, killed): finish the run here with the job's state."""
    from orchestrator.track.runs import get_run

    if handle.state.is_final and get_run(plan.tracking_uri, plan.run_id).info.status == RUNNING_STATUS:
        log.warning("the job ended %s before its driver finished the run; recording that", handle.state.value)
        finish(plan, handle)


def finish(plan: Plan, handle: JobHandle) -> Outcome:
    """Post-mortem on failure, then deliver the journal, upload the report and set the status, with
    the reason of a failure. A step that fails on this machine (a full disk) is said and passed
    over: the status is set whatever happens, unless MLflow itself cannot be reached (then it is
    kept beside the journal, for `orchestrator sync`)."""
    if handle.error:  # shown and written below: an error may quote a URI or a path holding a secret
        handle = replace(handle, error=plan.spec.redact(mask_uri_passwords(handle.error)))
    post_mortem = None
    if handle.state is JobState.FAILED:
        error, note = handle.error or "unknown error", _full_disk_note(plan)
        post_mortem = _post_mortem(plan, error + note) if plan.local_run_dir else None
        # shown and tagged: the message, not the workers' tracebacks (the post-mortem has those)
        handle = replace(handle, error=error_summary(error) + note)
    if handle.state is JobState.SUCCEEDED and plan.spec.export.formats and plan.local_run_dir:
        _export(plan)  # before the run is finished, so its MLflow page lists the model at once
    tracked = _finish_tracking(plan, handle.state.mlflow_status, handle.error)
    return Outcome(
        state=handle.state,
        error=handle.error,
        post_mortem=post_mortem,
        tracked=tracked,
        interrupted=handle.state is JobState.STOPPED,
    )


def _full_disk_note(plan: Plan) -> str:
    """What a failure does not always say: the run's disk is full (a worker's error may be a C++
    stream's or a pickler's, not ENOSPC)."""
    if not plan.local_run_dir:
        return ""
    try:
        free = shutil.disk_usage(plan.checkpoint_dir).free
    except OSError:
        return ""
    if free >= FULL_DISK_BYTES:
        return ""
    return f"; the disk holding {plan.checkpoint_dir} is full ({free:,} bytes free): No space left on device"


FULL_DISK_BYTES = 1 << 20


def _post_mortem(plan: Plan, error: str) -> Path | None:
    attempts = plan.spec.cluster.max_failures + 1
    try:
        return write_post_mortem(plan, error, attempts, resume_command(plan))
    except OSError as exc:
        log.warning("could not write the post-mortem in %s (%s)", plan.checkpoint_dir, exc.strerror or exc)
        return None


def export_outputs(plan: Plan, section=None) -> list:
    """The end-of-run export of a trained run: ``section`` (an ``ExportSpec``; the spec's `export:`
    by default), each format under the run directory; the ``ExportResult`` of each."""
    from orchestrator.export import export_after_run

    return export_after_run(
        section or plan.spec.export,
        plan.spec,
        plan.checkpoint_dir,
        plan.checkpoint_store(),
        plan.data.tokenizer_path,
        plan.tracking_uri,
        plan.run_id,
    )


def _export(plan: Plan) -> None:
    """The spec's `export:` formats; a failed export is reported and leaves the training FINISHED."""
    from orchestrator.errors import OrchestratorError

    try:
        results = export_outputs(plan)
    except (OrchestratorError, OSError) as exc:
        log.warning("the run trained, but its export failed: %s", plan.spec.redact(str(exc)))
        return
    for result in results:
        where = result.registered_name and f"{result.registered_name} v{result.registered_version}"
        log.info("exported   %s: %s", result.format, where or result.model_uri or result.out_dir)


def _fetch_journal(plan: Plan) -> None:
    """Rank 0 may have run on another node: its journal's copy beside the checkpoints (written with
    each checkpoint) is what this driver replays when it has none of its own."""
    from orchestrator.track.journal import JOURNAL_NAME, journal_path

    local = journal_path(plan.checkpoint_dir)
    if local.is_file() or not plan.local_run_dir or plan.identity.checkpoints_local:
        return
    store = plan.checkpoint_store()
    if store.exists(JOURNAL_NAME):
        store.download(JOURNAL_NAME, local)


def _finish_tracking(plan: Plan, status: str, reason: str | None) -> bool:
    """Deliver the journal, upload the report, set the status; on failure say how to finish later."""
    from orchestrator.track.finish import finish_run

    try:
        _fetch_journal(plan)
        finish_run(plan.tracking_uri, plan.run_id, status, plan.checkpoint_dir, reason)
        return True
    except Exception as exc:
        log.warning(
            "could not finish the MLflow run at %s (%s); its final status %s is kept in %s beside its "
            "metrics (metrics.journal.jsonl): run `%s` when MLflow is reachable",
            mask_uri_passwords(plan.spec.with_references(plan.tracking_uri)),
            mask_uri_passwords(plan.spec.redact(first_line(exc))),
            status,
            plan.checkpoint_dir,
            sync_command(plan),
        )
        return False


def sync_command(plan: Plan) -> str:
    """The command that finishes this run's tracking later (its store named as resume_command does)."""
    command = f"orchestrator sync {plan.run_id}"
    if plan.tracking_uri != tracking_uri_here():
        shown = mask_uri_passwords(plan.spec.with_references(plan.tracking_uri))
        command += f" --tracking-uri {shlex.quote(shown)}"
    return command


def resume_command(plan: Plan, command: str = "submit") -> str:
    """The command that continues this run (``command``: submit, or sweep for a sweep's parent run),
    its tracking store named unless it is the default here, with `${env:...}` references for its
    secrets, which --tracking-uri resolves."""
    command = f"orchestrator {command} --resume {shlex.quote(plan.run_name)}"
    if plan.tracking_uri != tracking_uri_here():
        shown = mask_uri_passwords(plan.spec.with_references(plan.tracking_uri))
        command += f" --tracking-uri {shlex.quote(shown)}"
    return command
