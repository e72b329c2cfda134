"""What a failed run leaves behind for a person: ``<checkpoint dir>/post_mortem.md``.

The error, the last complete checkpoint (where a resubmission would continue), the last status
(step, metrics, each worker's last heartbeat) and the last lines each worker wrote.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from orchestrator.errors import OrchestratorError
from orchestrator.fsutil import atomic_write
from orchestrator.masking import mask_uri_passwords
from orchestrator.plan import Plan
from orchestrator.track.status import read_status
from orchestrator.track.worker_logs import LOG_DIR, tail_lines
from orchestrator.train.checkpoint import latest_complete_checkpoint

POST_MORTEM_FILE = "post_mortem.md"
TAIL_LINES = 40


def write_post_mortem(plan: Plan, error: str, attempts_allowed: int, resume_command: str) -> Path:
    run_dir = Path(plan.checkpoint_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sections = [
        f"# Post-mortem of run {plan.run_name}",
        f"MLflow run {plan.run_id}, backend {plan.spec.cluster.backend}, "
        f"written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"## Error\n\n```\n{error}\n```\n\nThe worker group was started at most {attempts_allowed} "
        f"time(s) (cluster.max_failures = {attempts_allowed - 1}).",
        f"## Last complete checkpoint\n\n{_last_checkpoint(plan, resume_command)}",
        f"## Last status\n\n```json\n{json.dumps(read_status(run_dir), indent=1)}\n```",
        "## Last lines of each worker",
    ]
    for log in sorted((run_dir / LOG_DIR).glob("worker-*.log")):
        # what a worker printed may quote a secret (a library's error with a URL): masked here
        lines = plan.spec.redact(mask_uri_passwords("\n".join(tail_lines(log, TAIL_LINES))))
        sections.append(f"### {log.stem} ({log})\n\n```\n{lines}\n```")
    path = run_dir / POST_MORTEM_FILE
    atomic_write(path, ("\n\n".join(sections) + "\n").encode())
    return path


def _last_checkpoint(plan: Plan, resume_command: str) -> str:
    try:
        checkpoint = latest_complete_checkpoint(plan.checkpoint_store())
    except OrchestratorError as exc:  # the store itself may be why the run failed
        return f"unknown: {plan.checkpoint_uri} could not be read ({exc})"
    if checkpoint is None:
        return "none: the run wrote no complete checkpoint before it failed"
    return f"`{checkpoint.location}` (step {checkpoint.step}); continue with `{resume_command}`"
