"""The driver of a run on a cluster, started by the Ray Jobs API (and by a KubeRay RayJob):

    python -m launchers.job_entry run.json

It plans the run from its ticket (the resolved spec, secrets resolved from this environment), runs the
same Ray Train code as ray-local on the cluster it runs in (``address="auto"``), and finishes the run
through the same lifecycle as `orchestrator submit` (tracking, post-mortem, interruption). Exit code 0
only when training succeeded, so the backend reports the job's real outcome.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from launchers.ray_local import RayLocalLauncher
from orchestrator.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, OrchestratorError
from orchestrator.lifecycle import RunTicket, execute, plan_from_ticket
from orchestrator.masking import mask_uri_passwords


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # Shows which copy of the project runs: the one shipped in the job's working dir.
    print(f"code       {Path(__file__).resolve().parent.parent}", flush=True)
    try:
        plan = plan_from_ticket(RunTicket.read(argv[0]))
    except OrchestratorError as exc:
        print(mask_uri_passwords(exc.render()), file=sys.stderr, flush=True)
        return exc.exit_code
    outcome = execute(plan, RayLocalLauncher(address="auto"))
    print(f"state      {outcome.state.value}", flush=True)
    if outcome.error:
        print(f"error      {outcome.error}", flush=True)
    if outcome.post_mortem:
        print(f"post-mortem {outcome.post_mortem}", flush=True)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.succeeded else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
