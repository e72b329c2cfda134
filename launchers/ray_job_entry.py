"""The driver of a ray-job run, started by the Ray Jobs API on the cluster:

    python -m launchers.ray_job_entry plan.pkl

It runs the same Ray Train code as ray-local on the cluster it runs in (``address="auto"``), then
finishes the MLflow run the submitter created, as ``orchestrator submit`` does for a foreground run.
Exit code 0 only when training succeeded, so the Jobs API reports the job's real outcome.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from launchers.base import JobState
from launchers.ray_local import RayLocalLauncher
from orchestrator.track.finish import finish_run


def main(argv: list[str]) -> int:
    plan = pickle.loads(Path(argv[0]).read_bytes())
    # Shows which copy of the project runs: the one shipped in the job's working dir.
    print(f"code       {Path(__file__).resolve().parent.parent}", flush=True)
    Path(plan.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    handle = RayLocalLauncher(address="auto").submit(plan)
    finish_run(plan.tracking_uri, plan.run_id, handle.state.mlflow_status, plan.checkpoint_dir)
    print(f"state      {handle.state.value}", flush=True)
    if handle.error:
        print(f"error      {handle.error}", flush=True)
    if handle.post_mortem:
        print(f"post-mortem {handle.post_mortem}", flush=True)
    return 0 if handle.state is JobState.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
