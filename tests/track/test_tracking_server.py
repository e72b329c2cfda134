"""Against a real `mlflow server` backed by PostgreSQL (see conftest): an outage in the middle of a
run loses nothing and duplicates nothing; NaN/inf survive the server; the UI shows the run in its
model-training view (charts drawn, params, report artifacts, the exported model) and the registry
shows the registered model linked to its run."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import quote, urlparse

import pytest

from orchestrator.report import build_report
from orchestrator.report.artifacts import METRICS_JSON, load_training_metrics
from orchestrator.track.events import MetricEvent
from orchestrator.track.journal import MetricJournal, journal_path, read_journal
from orchestrator.track.live_report import LiveArtifacts
from orchestrator.track.mlflow_run import client, training_experiment
from orchestrator.track.mlflow_sink import MlflowSink, SinkSettings
from orchestrator.track.pipeline import JournaledSink
from orchestrator.track.runs import CHECKPOINT_DIR_TAG
from tests.conftest import REPO, wait_for, without_ray_teardown_noise

pytestmark = pytest.mark.slow

KEYS = ("train_loss", "learning_rate", "epoch")


def new_run(uri: str, experiment: str, run_name: str, out_dir):
    mlflow = client(uri)
    experiment_id = training_experiment(mlflow, experiment)  # as the orchestrator creates them
    run = mlflow.create_run(experiment_id, run_name=run_name, tags={CHECKPOINT_DIR_TAG: str(out_dir)})
    return experiment_id, run.info.run_id


def step_events(step: int, perplexity: bool = False) -> list[MetricEvent]:
    events = [
        MetricEvent("train_loss", 9.0 / (step + 1.7), step),
        MetricEvent("learning_rate", 3e-3 * 0.999**step, step),
        MetricEvent("epoch", float(1 + step // 100), step),
    ]
    return events + [MetricEvent("train_perplexity", math.exp(9.0 / (step + 1.7)), step)] * perplexity


class TrainingLoop(threading.Thread):
    """Writes one logging step every 20 ms through the sink, as rank 0 does, until stopped."""

    def __init__(self, sink: MlflowSink):
        super().__init__(daemon=True)
        self.sink, self.step, self.done = sink, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.step += 1
            self.sink.write(step_events(self.step))
            time.sleep(0.02)


def test_a_server_outage_mid_run_loses_no_step_and_duplicates_none(mlflow_server, tmp_path, monkeypatch):
    """... and the node's system metrics (MLflow's monitor, which stops at a failed request) start
    again once the server is back, their steps going on from where MLflow's series ended."""
    from orchestrator.track.system_metrics import SystemMetrics

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = mlflow_server.url
    _, run_id = new_run(uri, "outage", "outage-run", tmp_path)
    lines: list[str] = []
    settings = SinkSettings(drain_timeout_s=120, max_backoff_s=1.0)
    sink = JournaledSink(
        MetricJournal(journal_path(tmp_path)), MlflowSink(uri, run_id, settings, lines.append)
    )
    monitor = SystemMetrics(uri, run_id, interval_s=0.2, say=lines.append)
    loop = TrainingLoop(sink)
    loop.start()
    try:
        time.sleep(1.5)
        before = wait_for(lambda: system_steps(uri, run_id), 60, "the first system metrics on the server")
        mlflow_server.stop()
        stopped_at = loop.step
        time.sleep(3)
        steps_while_down = loop.step - stopped_at
        mlflow_server.start()  # same port, same PostgreSQL database
        wait_for(lambda: monitor.restarts, 60, "the system metrics monitor started again")
        time.sleep(1.5)
    finally:
        loop.done.set()
        loop.join()
        sink.close()
        monitor.close()
    assert steps_while_down > 10, "the training loop kept going while MLflow was down"
    assert any("MLflow unreachable" in line for line in lines), lines
    assert any("reachable again" in line for line in lines), lines
    assert sink.points_sink.unsent == 0 and sink.points_sink.sent == 3 * loop.step

    mlflow = client(uri)
    for key in KEYS:
        history = mlflow.get_metric_history(run_id, key)
        steps = sorted(m.step for m in history)
        assert steps == list(range(1, loop.step + 1)), f"{key}: each step exactly once"
        expected = {e.step: e.value for s in range(1, loop.step + 1) for e in step_events(s) if e.name == key}
        assert {m.step: m.value for m in history} == expected
    assert len(list(read_journal(journal_path(tmp_path)))) == 3 * loop.step
    after = system_steps(uri, run_id)
    assert before and len(after) == len(set(after)) and max(after) > max(before), (before, after)


def system_steps(uri: str, run_id: str) -> list[int]:
    return [m.step for m in client(uri).get_metric_history(run_id, "system/cpu_utilization_percentage")]


def test_nan_and_inf_round_trip_through_the_server(mlflow_server, tmp_path):
    uri = mlflow_server.url
    out = tmp_path / "run"
    _, run_id = new_run(uri, "non-finite", "non-finite-run", out)
    sink, live = MlflowSink(uri, run_id), LiveArtifacts(out)
    for step, value in {10: 2.5, 20: math.nan, 30: math.inf, 40: -math.inf}.items():
        batch = [MetricEvent("train_loss", value, step), MetricEvent("learning_rate", 1e-3, step)]
        batch += [MetricEvent("epoch", 1.0, step), MetricEvent("val_loss", value, step)]
        sink.write(batch)
        live.write(batch)
    sink.close()
    live.close()
    build_report(uri, run_id, tmp_path / "rebuilt")
    assert (tmp_path / "rebuilt" / METRICS_JSON).read_bytes() == (out / METRICS_JSON).read_bytes()
    back = load_training_metrics(tmp_path / "rebuilt" / METRICS_JSON)
    assert back["train_loss"][0] == 2.5 and math.isnan(back["train_loss"][1])
    assert back["train_loss"][2:] == [math.inf, -math.inf]
    assert math.isnan(back["val_loss"][1]) and back["val_loss"][2:] == [math.inf, -math.inf]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("Chromium is not installed: run `make test-deps`")
    return path


def loopback_only(route) -> None:
    """Nothing leaves the machine: every request to a host other than loopback is aborted."""
    url = urlparse(route.request.url)
    if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in ("127.0.0.1", "localhost"):
        route.abort()
    else:
        route.continue_()


UI_STEPS = 20
UI_RUN, UI_MODEL = "ui-check-run", "ui-check-gpt"


@pytest.fixture(scope="module")
def ui_run(mlflow_server, tmp_path_factory):
    """A finished run as `submit` leaves it: params, 20 logged steps, the report PNGs as artifacts,
    and an exported model logged to the run and registered. (experiment id, run id)"""
    from mlflow.entities import Param

    from orchestrator.export.hf import write_hf_directory
    from orchestrator.export.mlflow_model import log_model_to_run
    from orchestrator.spec.models import ModelSpec
    from orchestrator.train.model import build_model
    from tests.export.helpers import small_tokenizer

    uri, work = mlflow_server.url, tmp_path_factory.mktemp("ui-run")
    experiment_id, run_id = new_run(uri, "ui-check", UI_RUN, work)
    client(uri).log_batch(run_id, params=[Param("model.d_model", "32"), Param("optimizer.lr", "0.003")])
    sink = MlflowSink(uri, run_id)
    for step in range(1, UI_STEPS + 1):
        sink.write(step_events(step, perplexity=True))
    sink.close()
    build_report(uri, run_id, work / "report")  # the PNGs submit uploads at the end of a run
    client(uri).log_artifacts(run_id, str(work / "report"), "report")
    model_spec = ModelSpec(n_layers=1, n_heads=2, d_model=32, context_length=32, vocab_size=300)
    write_hf_directory(build_model(model_spec).eval(), model_spec, small_tokenizer(work), work / "hf")
    log_model_to_run(work / "hf", uri, run_id, UI_MODEL)
    client(uri).set_terminated(run_id, "FINISHED")
    return experiment_id, run_id


@pytest.fixture
def browser_page(mlflow_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"],
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.route("**/*", loopback_only)
            yield context.new_page()
        finally:
            browser.close()


def screenshots():
    shots = REPO / "test-artifacts"
    shots.mkdir(exist_ok=True)
    return shots


def chart_card(page, metric: str):
    """The chart card of one metric on a run's model-metrics tab."""
    title = page.locator(f'h4[title="{metric}"]')
    return page.locator('[data-testid="experiment-view-compare-runs-card"]').filter(has=title).first


def test_the_mlflow_ui_shows_the_run_and_its_train_loss(mlflow_server, ui_run, browser_page):
    from playwright.sync_api import expect

    from orchestrator.track.ui import run_page_url

    uri, (experiment_id, run_id), page = mlflow_server.url, ui_run, browser_page
    run_page = run_page_url(uri, run_id)  # what submit prints at the end of a run
    page.goto(run_page)
    expect(page.get_by_text(UI_RUN).first).to_be_visible(timeout=60_000)
    # the model-training view: its side navigation, not the GenAI one (Evaluation runs, Judges, ...)
    expect(page.get_by_role("link", name="Model registry")).to_be_visible(timeout=60_000)
    expect(page.locator("nav").get_by_role("link", name="Runs", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Evaluation runs")).to_have_count(0)
    expect(page.get_by_text("model.d_model", exact=True)).to_be_attached()  # the params
    model_link = page.get_by_role("link", name=UI_MODEL).first  # the exported, registered model
    expect(model_link).to_be_visible()
    assert model_link.get_attribute("href") == f"#/models/{UI_MODEL}/versions/1"
    expect(page.get_by_text("Logged models (1)")).to_be_attached()
    page.screenshot(path=str(screenshots() / "mlflow-ui-run.png"))

    page.get_by_role("tab", name="Model metrics").click()
    for metric in ("train_loss", "train_perplexity", "learning_rate"):
        card = chart_card(page, metric)
        # drawn, not loading: one plotted marker per logged step and a line through them
        expect(card.locator(".scatterlayer path.point")).to_have_count(UI_STEPS, timeout=60_000)
        assert_line_runs_through_the_points(card, metric)
    page.screenshot(path=str(screenshots() / "mlflow-ui-train-loss-chart.png"))

    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("report", exact=True).first.click()
    expect(page.get_by_text("training_curve.png").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("loss_by_epoch.png").first).to_be_visible()

    page.goto(metric_page_url(uri, experiment_id, run_id))
    expect(page.get_by_role("heading", name="train_loss").first).to_be_visible(timeout=60_000)
    latest = f"{step_events(UI_STEPS)[0].value:.10f}"[:10]  # the table of latest/min/max values
    expect(page.get_by_text(latest).first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(screenshots() / "mlflow-ui-train-loss.png"))
    assert (screenshots() / "mlflow-ui-run.png").stat().st_size > 10_000


def test_the_models_page_lists_the_registered_model_linked_to_its_run(mlflow_server, ui_run, browser_page):
    from playwright.sync_api import expect

    uri, (experiment_id, run_id), page = mlflow_server.url, ui_run, browser_page
    page.goto(f"{uri}/#/models?workflowType=machine_learning")
    listed = page.get_by_role("link", name=UI_MODEL, exact=True)
    expect(listed).to_be_visible(timeout=60_000)
    assert listed.get_attribute("href").endswith(f"/models/{UI_MODEL}")
    page.goto(f"{uri}/#/models/{UI_MODEL}/versions/1?workflowType=machine_learning")
    expect(page.get_by_role("heading", name="Version 1")).to_be_visible(timeout=60_000)
    source_run = page.get_by_role("link", name=UI_RUN)
    expect(source_run).to_be_visible(timeout=60_000)
    assert source_run.get_attribute("href") == f"#/experiments/{experiment_id}/runs/{run_id}"
    page.screenshot(path=str(screenshots() / "mlflow-ui-registered-model.png"))
    source_run.click()
    expect(page.get_by_text(run_id).first).to_be_visible(timeout=60_000)  # the link leads to the run


def assert_line_runs_through_the_points(card, metric: str) -> None:
    """The chart's line starts at its first plotted point and ends at its last one (plotly drops
    collinear vertices in between, so only the ends are compared)."""
    line = card.locator(".scatterlayer path.js-line").first.get_attribute("d") or ""
    vertices = [tuple(map(float, xy)) for xy in re.findall(r"[ML]([\d.]+),([\d.]+)", line)]
    transforms = card.locator(".scatterlayer path.point").evaluate_all(
        "els => els.map(e => e.getAttribute('transform'))"
    )
    points = [tuple(map(float, re.findall(r"[\d.]+", t)[:2])) for t in transforms]
    assert len(vertices) >= 2, f"{metric}: no line drawn ({line!r})"
    assert vertices[0] == pytest.approx(points[0], abs=0.5) and vertices[-1] == pytest.approx(
        points[-1], abs=0.5
    )
    assert len({round(y) for _, y in points}) > 5, f"{metric}: the points do not follow the values"


def metric_page_url(uri: str, experiment_id: str, run_id: str) -> str:
    return f"{uri}/#/metric?" + "&".join(
        f"{name}={quote(json.dumps(value))}"
        for name, value in (
            ("runs", [run_id]),
            ("metric", "train_loss"),
            ("experiments", [experiment_id]),
            ("plot_metric_keys", ["train_loss"]),
        )
    )


def test_a_finished_run_is_reported_from_its_snapshot_only_while_mlflow_agrees(mlflow_server, tmp_path):
    from orchestrator.report.artifacts import REPORT_METRICS
    from orchestrator.report.mlflow_history import read_history
    from orchestrator.track.finish import finish_run
    from orchestrator.track.mlflow_read import read_latest_per_step
    from orchestrator.track.snapshot import read_snapshot

    uri = mlflow_server.url
    out = tmp_path / "run"
    _, run_id = new_run(uri, "snapshot", "snapshot-run", out)
    sink, live = JournaledSink(MetricJournal(journal_path(out)), MlflowSink(uri, run_id)), LiveArtifacts(out)
    for step in range(1, 31):
        events = [*step_events(step), MetricEvent("val_loss", math.nan if step == 30 else 1.0 / step, step)]
        sink.write(events)
        live.write(events)
    sink.close()
    live.close()
    finish_run(uri, run_id, "FINISHED", str(out))
    mlflow = client(uri)
    snapshot = read_snapshot(mlflow, mlflow.get_run(run_id), REPORT_METRICS)
    assert snapshot is not None and snapshot == read_latest_per_step(uri, run_id, REPORT_METRICS) | {
        "val_loss": snapshot["val_loss"]
    }
    assert math.isnan(snapshot["val_loss"][30])
    build_report(uri, run_id, tmp_path / "rebuilt")
    assert (tmp_path / "rebuilt" / METRICS_JSON).read_bytes() == (out / METRICS_JSON).read_bytes()

    extra = MlflowSink(uri, run_id)
    extra.write([MetricEvent("train_loss", 0.125, 31)])  # logged after the snapshot: it is stale now
    extra.close()
    assert read_snapshot(mlflow, mlflow.get_run(run_id), REPORT_METRICS) is None
    assert read_history(uri, run_id)["train_loss"][31] == 0.125


LIVE_PEAK_TFLOPS = 0.01  # a CPU has no known peak: given in the spec, so the run logs mfu


@pytest.fixture(scope="module")
def live_run(mlflow_server, tmp_path_factory):
    """A real `submit` to the server (the tiny spec for 5000 steps, a peak given, system metrics every
    0.5 s), watched while it trains, then stopped with SIGTERM as a scheduler does. What was seen."""
    from types import SimpleNamespace

    from orchestrator.track.status import read_status
    from tests.conftest import TINY_SPEC
    from tests.servers import stop_process_group

    uri, work = mlflow_server.url, tmp_path_factory.mktemp("live")
    spec = TINY_SPEC.replace("max_steps: 20", "max_steps: 5000").replace("name: tiny", "name: live")
    spec = spec.replace("eval_batches: 2}", f"eval_batches: 2, peak_tflops: {LIVE_PEAK_TFLOPS}}}")
    (work / "spec.yaml").write_text(spec + f"tracking: {{uri: '{uri}', system_metrics_interval_s: 0.5}}\n")
    log = work / "submit.log"
    driver = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "submit", "spec.yaml"],
        cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        found = wait_for(lambda: re.search(r"MLflow run (\w+)\)", log.read_text()), 300, "the run id")
        run_id = found.group(1)
        mlflow = client(uri)
        seen = wait_for(lambda: mlflow.get_metric_history(run_id, "train_loss"), 300, "a point on the server")
        system = wait_for(lambda: system_cpu(mlflow, run_id), 300, "a system metric on the server")
        (run_dir,) = (work / "checkpoints").iterdir()
        status = read_status(run_dir)
        running = driver.poll() is None and mlflow.get_run(run_id).info.status == "RUNNING"
        output_then = log.read_text()
        commands = commands_on_a_live_run(uri, run_id, work) if running else None
        driver.send_signal(signal.SIGTERM)  # `kill PID`, as a scheduler or `timeout` does
        returncode = driver.wait(180)
    finally:
        if driver.poll() is None:
            stop_process_group(driver)
    return SimpleNamespace(
        run_id=run_id, seen=seen, system=system, status=status, running=running,
        output_then=output_then, returncode=returncode, output=log.read_text(), commands=commands,
        driver_pid=driver.pid,
    )  # fmt: skip


def system_cpu(mlflow, run_id: str) -> list:
    return mlflow.get_metric_history(run_id, "system/cpu_utilization_percentage")


@pytest.mark.ray
def test_points_reach_the_server_while_the_run_trains_and_sigterm_ends_it_killed(mlflow_server, live_run):
    """A cluster user watches a server-tracked run in the MLflow UI: points must arrive while it trains
    (not only through the replay at the end). Then a scheduler stops the job with SIGTERM: the
    command exits 130, the run is KILLED on the server and the resume command is printed."""
    run, out = live_run, live_run.output
    assert run.running, "still training when the first points were on the server"
    assert run.status is not None and run.status["step"] < run.status["total_steps"], "still training"
    assert "MLflow unreachable" not in run.output_then, run.output_then[-2000:]
    assert run.returncode == 130, out[-3000:]
    assert min(m.step for m in run.seen) == 5
    assert client(mlflow_server.url).get_run(run.run_id).info.status == "KILLED"
    # no checkpoint before the end (checkpoint.interval unset): nothing to resume, so no resume hint
    assert (
        "no checkpoint was saved, so there is nothing to resume; start again: orchestrator submit spec.yaml"
        in out
    )
    assert "--resume" not in out, out[-2000:]
    ours = without_ray_teardown_noise(out)
    assert "Traceback" not in ours and "SIGABRT" not in out, out[-3000:]


@pytest.mark.ray
def test_the_run_page_shows_mfu_and_the_system_metrics(mlflow_server, live_run, browser_page):
    """The run of a real submit, in MLflow's client and on its run page: mfu and tflops among the
    model metrics, and the System metrics tab listing the node's `system/...` charts."""
    from playwright.sync_api import expect

    from orchestrator.track.ui import run_page_url

    uri, page = mlflow_server.url, browser_page
    keys = set(client(uri).get_run(live_run.run_id).data.metrics)
    system = sorted(k for k in keys if k.startswith("system/"))
    assert {"mfu", "tflops"} <= keys and "system/cpu_utilization_percentage" in system, keys
    assert "system/system_memory_usage_megabytes" in system
    assert live_run.system, "sampled while the run trained, not only at its end"
    mfu = client(uri).get_metric_history(live_run.run_id, "mfu")
    assert mfu and all(0 < m.value < 1 for m in mfu)
    assert re.search(r"TFLOP/s/device MFU \d+\.\d%", live_run.output), live_run.output[-2000:]

    page.goto(run_page_url(uri, live_run.run_id))
    page.get_by_role("tab", name="Model metrics").click()
    expect(chart_card(page, "mfu")).to_be_visible(timeout=60_000)
    page.get_by_role("tab", name="System metrics").click()
    expect(page.get_by_text(re.compile(rf"System metrics\s*\({len(system)}\)"))).to_be_visible(timeout=60_000)
    titles = page.locator('h4[title^="system/"]')
    expect(titles.first).to_be_visible(timeout=60_000)
    shown = titles.evaluate_all("els => els.map(e => e.getAttribute('title'))")  # those drawn so far
    assert "system/cpu_utilization_percentage" in shown and set(shown) <= set(system), shown
    page.screenshot(path=str(screenshots() / "mlflow-ui-system-metrics.png"))


def run_main(argv: list[str], cwd=".") -> tuple[int, str]:
    """The command line in this process, in ``cwd``: its exit code and everything it printed."""
    import contextlib
    import io

    from orchestrator.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue() + err.getvalue()


def commands_on_a_live_run(uri: str, run_id: str, cwd) -> dict:
    """While the run trains: `submit --resume`, `sync` and `cancel` of it, and its MLflow status after
    them (what each printed, with its exit code)."""
    seen = {
        command: run_main([command, *extra, run_id, "--tracking-uri", uri], cwd)
        for command, extra in (("submit", ["--resume"]), ("sync", []), ("cancel", []))
    }
    return {**seen, "status": client(uri).get_run(run_id).info.status}


@pytest.mark.ray
def test_commands_on_a_live_run_leave_it_alone_and_say_where_it_runs(live_run):
    """A second trainer for a run that trains is refused before anything starts; `sync` and `cancel`
    leave it alone and say where it runs."""
    assert live_run.running and live_run.commands, "the run trained while the commands ran"
    pid, seen = live_run.driver_pid, live_run.commands
    code, output = seen["submit"]
    assert code == 2 and "still training" in output and f"pid {pid}" in output, output
    code, output = seen["sync"]
    assert code == 0 and "still training" in output and "RUNNING" in output, output
    code, output = seen["cancel"]
    assert code == 1 and f"pid {pid}" in output and "Ctrl-C" in output, output
    assert seen["status"] == "RUNNING", "the live run was not touched"
    assert not any("Traceback" in out for _, out in (seen["submit"], seen["sync"], seen["cancel"]))


@pytest.mark.ray
def test_a_server_down_at_the_end_of_a_trained_run_is_said_and_sync_finishes_it(mlflow_server, tmp_path):
    """Training succeeds, then the tracking server crashes before the driver finishes the run: submit
    says the run trained and its tracking is incomplete, prints the run id and the `sync` command,
    keeps the final status beside the journal; once the server is back, that command finishes it."""
    from orchestrator.track.runs import FINAL_STATUS_FILE
    from tests.conftest import TINY_SPEC
    from tests.servers import stop_process_group

    uri = mlflow_server.url
    tracking = f"tracking: {{uri: '{uri}', request_timeout_s: 5, request_retries: 0, drain_timeout_s: 5}}"
    (tmp_path / "spec.yaml").write_text(TINY_SPEC.replace("name: tiny", "name: lastgasp") + tracking + "\n")
    log = tmp_path / "submit.log"
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "submit", "spec.yaml"],
        cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: "[train] done" in log.read_text() or driver.poll() is not None, 400, "the end")
        mlflow_server.kill()  # every point was delivered; the driver has not finished the run yet
        returncode = driver.wait(300)
    finally:
        if driver.poll() is None:
            stop_process_group(driver)
        mlflow_server.start()
    out = log.read_text()
    run_id = re.search(r"MLflow run (\w+)\)", out).group(1)
    assert returncode == 1, out[-3000:]
    assert "Traceback" not in without_ray_teardown_noise(out), out[-3000:]
    assert "trained" in out and "tracking incomplete" in out, out[-3000:]
    sync = f"orchestrator sync {run_id} --tracking-uri {uri}"
    assert sync in out and "the MLflow store cannot be used" not in out, out[-3000:]
    (run_dir,) = (tmp_path / "checkpoints").iterdir()
    assert json.loads((run_dir / FINAL_STATUS_FILE).read_text())["status"] == "FINISHED"
    assert client(uri).get_run(run_id).info.status == "RUNNING"  # until the sync

    code, output = run_main(["sync", run_id, "--tracking-uri", uri])
    assert code == 0 and "FINISHED" in output, output
    run = client(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and "final_val_loss" in run.data.metrics
