"""The MLflow export: the model is logged to its run, registered as a new version that points at
the run, and loads in a fresh process that never imports this project, where it generates the same
greedy text as the project's own sampler."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.export import export_run
from orchestrator.generate import Sampling, generate_texts, load_from_directory
from orchestrator.lifecycle.run import export_outputs
from orchestrator.spec.export import ExportSpec
from orchestrator.track.mlflow_run import client

pytestmark = [pytest.mark.slow]
pytest.importorskip("transformers")

PROMPT = "The for statement"
LOAD_AND_GENERATE = """
import json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
prompts = pd.DataFrame({"prompt": [sys.argv[3], "x"]})
out = model.predict(prompts, params={"max_new_tokens": 12, "temperature": 0.0})
leaked = sorted(name for name in sys.modules if name.split(".")[0] in ("orchestrator", "launchers"))
print(json.dumps({"texts": out["text"].tolist(), "leaked": leaked}))
"""


def load_in_fresh_process(uri: str, model_uri: str, cwd) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_GENERATE, uri, model_uri, PROMPT],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def end_of_run_export(trained_run):
    """The end-of-run hook with every format, as `submit` calls it for an `export:` section."""
    plan = trained_run(2)
    section = ExportSpec(formats=["mlflow", "safetensors", "hf"], register_name="engine-gpt")
    results = export_outputs(plan, section)
    return plan, {r.format: r for r in results}


def test_the_registered_version_points_at_the_run_and_the_run_lists_the_model(end_of_run_export):
    plan, results = end_of_run_export
    assert list(results) == ["hf", "mlflow", "safetensors"]
    logged = results["mlflow"]
    assert logged.registered_name == "engine-gpt" and logged.registered_version == "1"
    mlflow = client(plan.tracking_uri)
    version = mlflow.get_model_version("engine-gpt", "1")
    assert version.run_id == plan.run_id and version.status == "READY"
    assert version.source == logged.model_uri
    run = mlflow.get_run(plan.run_id)
    model_id = logged.model_uri.removeprefix("models:/")
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    model = mlflow.get_logged_model(model_id)
    assert model.source_run_id == plan.run_id and model.experiment_id == run.info.experiment_id
    assert model.status.to_proto() == 2  # READY
    assert model.tags["orchestrator.export.step"] == str(logged.step)


def test_the_model_loads_and_generates_without_this_project(end_of_run_export, tmp_path):
    plan, results = end_of_run_export
    answer = load_in_fresh_process(plan.tracking_uri, "models:/engine-gpt/1", tmp_path)
    assert answer["leaked"] == []
    local = load_from_directory(results["hf"].out_dir)  # the directory the MLflow model wraps
    greedy = Sampling(max_new_tokens=12, temperature=0, stop_at_end_of_text=True)
    assert answer["texts"][0] == generate_texts(local, [PROMPT], greedy)[0]
    assert answer["texts"][0].startswith(PROMPT) and len(answer["texts"][0]) > len(PROMPT)
    assert answer["texts"][1].startswith("x")


def test_the_model_carries_its_signature_input_example_and_standalone_code(end_of_run_export, tmp_path):
    import mlflow
    from mlflow.models import Model

    from orchestrator.export.mlflow_model import using_tracking_uri

    plan, results = end_of_run_export
    with using_tracking_uri(plan.tracking_uri):  # a models:/ URI is resolved through the current store
        path = mlflow.artifacts.download_artifacts(results["mlflow"].model_uri, dst_path=str(tmp_path))
    model = Model.load(path)
    assert model.signature.inputs.input_names() == ["prompt"]
    assert model.signature.outputs.input_names() == ["text"]
    assert {p.name for p in model.signature.params} == {"max_new_tokens", "temperature", "top_k", "seed"}
    assert model.load_input_example(path)["prompt"].tolist() == [PROMPT]
    code = (tmp_path / "mlflow_pyfunc.py").read_text()
    assert "import orchestrator" not in code and "from orchestrator" not in code
    assert sorted(p.name for p in (tmp_path / "artifacts" / "hf").iterdir()) == sorted(
        p.name for p in results["hf"].files
    )


def test_a_second_export_is_a_new_version_and_refusals_say_what_to_do(end_of_run_export, tmp_path):
    from orchestrator.errors import UsageError

    plan, _ = end_of_run_export
    again = export_run(
        plan.spec, plan.checkpoint_dir, plan.data.tokenizer_path, "mlflow",
        tracking_uri=plan.tracking_uri, run_id=plan.run_id, register_name="engine-gpt", which="latest",
    )  # fmt: skip
    assert again.registered_version == "2" and again.out_dir is None
    with pytest.raises(UsageError, match="needs the run's tracking URI and MLflow run id"):
        export_run(plan.spec, plan.checkpoint_dir, plan.data.tokenizer_path, "mlflow")
    with pytest.raises(UsageError, match="add --format mlflow"):
        export_run(
            plan.spec, plan.checkpoint_dir, plan.data.tokenizer_path, "hf", tmp_path, register_name="x"
        )
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(UsageError, match="not an empty directory"):
        export_run(plan.spec, plan.checkpoint_dir, plan.data.tokenizer_path, "hf", tmp_path / "taken")
