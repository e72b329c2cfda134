"""Log an exported model to its MLflow run and register it as a new model version.

The model is a pyfunc built from code (``mlflow_pyfunc.py``, which imports nothing of this project)
around the Hugging Face directory of ``export --format hf``, so ``mlflow.pyfunc.load_model`` loads
it anywhere ``transformers`` is installed. It carries a signature (``prompt`` in, ``text`` out,
sampling params) and an input example, is linked to the run (the run page lists it under its
logged models), and with a register name becomes a new version of that registered model, whose
page links back to the run. Nothing goes to the Hugging Face hub.

>>> logged = log_model_to_run("out/hf", "sqlite:///mlflow.db", run_id, "quickstart-gpt")  # doctest: +SKIP
>>> logged.model_uri, logged.version  # doctest: +SKIP
('models:/m-0123...', '1')
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from orchestrator.errors import TrackingError

log = logging.getLogger(__name__)
CODE_FILE = Path(__file__).with_name("mlflow_pyfunc.py")
ARTIFACT_KEY = "hf_model"
MODEL_NAME = "model"
INPUT_EXAMPLE_PROMPT = "The for statement"
# what loading the model needs; versions pinned to those the model was exported with
RUNTIME_PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas")


@dataclass(frozen=True)
class LoggedModel:
    model_id: str
    model_uri: str  # models:/<model id>
    registered_name: str | None = None
    version: str | None = None  # the new registered model version


def log_model_to_run(
    hf_dir: str | Path,
    tracking_uri: str,
    run_id: str,
    register_name: str | None = None,
    source: dict | None = None,
) -> LoggedModel:
    """Log the Hugging Face directory ``hf_dir`` as the run's model; register it if asked."""
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    from orchestrator.track.mlflow_run import client

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local directory: never ask the hub
    mlflow_client = client(tracking_uri)
    try:
        run = mlflow_client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"MLflow run {run_id} not found in {tracking_uri}: {exc.message}") from None
    with using_tracking_uri(tracking_uri):
        # created here, in the run's experiment: left to MLflow it lands in the active experiment
        logged = mlflow_client.create_logged_model(
            run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id, tags=_tags(source)
        )
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=str(CODE_FILE),
            artifacts={ARTIFACT_KEY: str(hf_dir)},
            signature=signature(),
            input_example=input_example(),
            pip_requirements=pip_requirements(),
            registered_model_name=register_name,
        )
        mlflow_client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    version = None if info.registered_model_version is None else str(info.registered_model_version)
    log.info("logged model %s to run %s (registered: %s %s)", logged.model_id, run_id, register_name, version)
    return LoggedModel(logged.model_id, f"models:/{logged.model_id}", register_name, version)


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt")]),
        outputs=Schema([ColSpec("string", "text")]),
        params=ParamSchema(
            [
                ParamSpec("max_new_tokens", "long", 50),
                ParamSpec("temperature", "double", 0.8),
                ParamSpec("top_k", "long", 50),
                ParamSpec("seed", "long", -1),
            ]
        ),
    )


def input_example():
    """A prompt and params that are quick to run: MLflow runs the example once while logging."""
    import pandas as pd

    return pd.DataFrame({"prompt": [INPUT_EXAMPLE_PROMPT]}), {"max_new_tokens": 8, "temperature": 0.0}


def pip_requirements() -> list[str]:
    pinned = []
    for package in RUNTIME_PACKAGES:
        try:
            version = metadata.version(package).split("+")[0]  # 2.13.0+cpu -> 2.13.0: an index version
        except metadata.PackageNotFoundError:
            pinned.append(package)
        else:
            pinned.append(f"{package}=={version}")
    return pinned


def _tags(source: dict | None) -> dict[str, str]:
    return {f"orchestrator.export.{key}": str(value) for key, value in (source or {}).items()}


@contextlib.contextmanager
def using_tracking_uri(uri: str):
    """MLflow's logging functions read the process-wide tracking URI: set it for this block only.
    ``set_tracking_uri`` also writes MLFLOW_TRACKING_URI into the environment (for subprocesses):
    that is put back as it was too, or every later command would default to this store."""
    import mlflow

    from orchestrator.track.mlflow_run import mlflow_uri

    previous, in_environment = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(mlflow_uri(uri))  # its credentials, if any, in the environment
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if in_environment is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = in_environment
