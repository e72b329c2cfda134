"""Exact resume, on any world size: a run killed between two checkpoints (mid-epoch) and resumed sees,
step by step from its checkpoint on, the samples the uninterrupted run saw; with the same workers its
losses are the same, and with another worker count (the global batch kept by rescaling gradient
accumulation, the checkpoint converted to DeepSpeed's universal form) the tokens per step and the
learning rate are equal and the losses agree within the tolerance of another reduction order.

Runs under torchrun (2 CPU ranks, gloo) with the real worker: tests/train/engine_main.py records each
rank's sample ids and kills every rank after a step without saving."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.train.harness import engine_spec, make_plan, metric_history, output, run_engine

pytestmark = pytest.mark.slow

STEPS, INTERVAL, KILLED_AFTER = 20, 10, 13  # checkpoint at 10; killed (unsaved) after 13
# fp32 on one rank against two: the gradient all-reduce sums in another order
ELASTIC_RTOL = 2e-5
# ZeRO-3 through DeepSpeed's universal checkpoint drifts more: 1e-5 at the first step of the new world,
# 8e-4 six steps later (the same with weight decay 0 and untied embeddings, so it is not the project's
# parameter groups; ZeRO-3 itself gives 1 and 2 workers equal losses). Measured and bounded, not hidden.
ZERO3_ELASTIC_RTOL = 2e-3


def _spec(stage: int = 2, workers: int = 2) -> str:
    accumulation = 2 // workers  # global batch 8 = micro 4 x accumulation x workers
    return engine_spec(
        steps=STEPS, interval=INTERVAL, stage=stage, workers=workers, eval_interval=10,
        train_extra=f", gradient_accumulation_steps: {accumulation}", keep_last=3,
    )  # fmt: skip


def _samples(path: Path) -> dict[tuple[int, int], list[int]]:
    """(epoch, position) of each optimizer step -> the sorted ids all ranks trained on in it."""
    steps: dict[tuple[int, int], list[int]] = defaultdict(list)
    for rank_file in sorted(path.parent.glob(path.name + ".*")):
        for line in rank_file.read_text().splitlines():
            record = json.loads(line)
            steps[(record["epoch"], record["position"])].extend(record["ids"])
    return {key: sorted(ids) for key, ids in steps.items()}


class Baselines:
    """The uninterrupted run of each ZeRO stage (2 workers), trained on first use."""

    def __init__(self, work: Path):
        self.work, self.runs = work, {}

    def __getitem__(self, stage: int):
        if stage not in self.runs:
            work = self.work / f"stage{stage}"
            work.mkdir()
            plan = make_plan(work, _spec(stage), f"baseline-{stage}")
            result = run_engine(plan, "--record-samples", str(work / "samples"))
            assert result.returncode == 0, output(result)
            self.runs[stage] = (plan, _samples(work / "samples"))
        return self.runs[stage]


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    return Baselines(tmp_path_factory.mktemp("baselines"))


@pytest.fixture(scope="module")
def baseline(baselines):
    """The uninterrupted run: 2 workers, ZeRO-2."""
    return baselines[2]


def _values(plan, key: str, after: int = 0) -> tuple[list[int], list[float]]:
    """(steps, values) of a metric after step ``after``, as MLflow holds it."""
    history = [(s, v) for s, v in metric_history(plan, key) if s > after]
    return [s for s, _ in history], [v for _, v in history]


def _killed_and_resumed(work: Path, first_workers: int, then_workers: int, stage: int = 2):
    """A run killed after step 13 and resumed (as `submit --resume` would: the same run, its spec with
    the new worker count and the accumulation that keeps the global batch)."""
    from orchestrator.plan import build_plan
    from orchestrator.spec import parse_spec

    plan = make_plan(work, _spec(stage, first_workers), "resumed")
    first = run_engine(plan, "--exit-after-step", str(KILLED_AFTER), "--record-samples",
                       str(work / "before"), nproc=first_workers)  # fmt: skip
    assert first.returncode != 0 and "[train] step 13/20" in first.stdout, output(first)
    again = build_plan(parse_spec(_spec(stage, then_workers)), plan.data, plan.identity)
    second = run_engine(again, "--record-samples", str(work / "after"), nproc=then_workers)
    assert second.returncode == 0, output(second)
    _replay(plan)
    assert f"resumed from {plan.checkpoint_uri}/step-{INTERVAL}" in second.stdout, output(second)
    return plan, second, _samples(work / "after")


def _replay(plan) -> None:
    """What the driver does when the run ends: the journal's points that never reached MLflow (the
    killed attempt's last steps) are delivered."""
    from orchestrator.track.journal import journal_path
    from orchestrator.track.replay import replay_journal

    replay_journal(plan.tracking_uri, plan.run_id, journal_path(plan.checkpoint_dir))


def _positions_after(samples: dict, step: int) -> list[tuple[int, int]]:
    """The data positions of the optimizer steps after ``step`` (global batch 8)."""
    return [key for key in sorted(samples) if key[0] == 1 and 8 * step <= key[1] < 8 * STEPS]


def test_the_global_sample_order_does_not_depend_on_the_number_of_workers(baseline, tmp_path):
    _, expected = baseline
    plan = make_plan(tmp_path, _spec(workers=1), "one-worker")
    result = run_engine(plan, "--record-samples", str(tmp_path / "samples"), nproc=1)
    assert result.returncode == 0, output(result)
    one = _samples(tmp_path / "samples")
    steps = _positions_after(expected, 0)
    assert len(steps) == STEPS and all(len(expected[k]) == 8 for k in steps)
    assert [one[k] for k in steps] == [expected[k] for k in steps]


def test_a_resumed_run_sees_the_same_samples_and_losses_as_the_uninterrupted_one(baseline, tmp_path):
    reference, expected = baseline
    plan, _, after = _killed_and_resumed(tmp_path, 2, 2)
    steps = _positions_after(expected, INTERVAL)
    assert len(steps) == STEPS - INTERVAL
    assert [after[k] for k in steps] == [expected[k] for k in steps], "step by step, the same samples"
    steps, losses = _values(plan, "train_loss")
    assert steps == list(range(1, STEPS + 1)), "every step once in MLflow"
    assert losses == pytest.approx(_values(reference, "train_loss")[1], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize(
    ("first", "then", "stage"),
    [(2, 1, 2), (1, 2, 2), (2, 1, 1), (2, 1, 3)],
    ids=["zero2-2to1", "zero2-1to2", "zero1-2to1", "zero3-2to1"],
)
def test_an_elastic_resume_keeps_the_samples_the_batch_and_the_schedule(
    baselines, tmp_path, first, then, stage
):
    """Steps 11-13 were logged by the killed attempt; 14-20 are the resumed world's own. Compared with
    the uninterrupted run of the same stage."""
    reference, expected = baselines[stage]
    plan, second, after = _killed_and_resumed(tmp_path, first, then, stage)
    assert f"converted from {first} workers (universal checkpoint)" in second.stdout
    steps = _positions_after(expected, INTERVAL)
    assert [after[k] for k in steps] == [expected[k] for k in steps]
    assert "global batch 8 sequences (256 tokens/step)" in second.stdout
    for key in ("learning_rate", "train_loss"):
        own_steps, resumed = _values(plan, key, after=KILLED_AFTER)
        assert own_steps == list(range(KILLED_AFTER + 1, STEPS + 1))
        uninterrupted = _values(reference, key, after=KILLED_AFTER)[1]
        tolerance = 0 if key == "learning_rate" else ZERO3_ELASTIC_RTOL if stage == 3 else ELASTIC_RTOL
        assert resumed == pytest.approx(uninterrupted, rel=tolerance, abs=1e-9), key
