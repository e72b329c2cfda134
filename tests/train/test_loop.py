"""The loop's bookkeeping on a one-rank gloo group (no DeepSpeed): throughput without evaluation and
checkpoint time, a NaN found at the logging step, validation that counts every sequence once."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
import torch

from orchestrator.data.cursor import DataCursor
from orchestrator.train import loop
from orchestrator.train.early_stopping import EarlyStopping


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    import torch.distributed as dist

    store = tmp_path_factory.mktemp("process-group") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def new_session(total_steps: int = 100) -> loop.Session:
    train = SimpleNamespace(nan_policy="stop", gradient_accumulation_steps=1, micro_batch_size=4)
    plan = SimpleNamespace(spec=SimpleNamespace(train=train), total_steps=total_steps, flops_per_token=1e6)
    engine = SimpleNamespace(get_global_grad_norm=lambda: 1.5)
    return loop.Session(
        plan=plan, engine=engine, dataset=None, device=torch.device("cpu"), rank=0, world=1,
        stopper=EarlyStopping(), cursor=DataCursor(seed=1, samples_per_epoch=10_000), feeder=None,
        checkpoints=None, eval_ids=None,
    )  # fmt: skip


def test_tokens_per_second_leave_out_evaluation_and_checkpoint_time(one_rank):
    s = new_session()
    s.state.step = 5
    s.window = loop.Window(first_step=1, start=time.perf_counter() - 10.0)
    for _ in range(5):
        s.window.add(torch.tensor(2.0), 1024)
    s.window.paused_s = 6.0  # what evaluating and checkpointing took inside the window's 10 s
    values = {e.name: e.value for e in loop.train_events(s, lr=1e-3, epoch=1)}
    assert values["train_loss"] == pytest.approx(2.0)
    assert values["tokens_per_second"] == pytest.approx(5 * 1024 / 4.0, rel=0.05)  # 4 s of training
    assert values["grad_norm"] == 1.5
    assert values["tflops"] == pytest.approx(values["tokens_per_second"] * 1e6 / 1e12)
    assert "mfu" not in values  # no peak known
    assert s.window.first_step == 6 and s.window.paused_s == 0.0, "the next window starts clean"


def test_paused_work_is_reported_and_taken_out_of_the_window(one_rank):
    s = new_session()
    s.state.step = 25
    events = loop._paused(s, "eval_seconds", lambda: [loop.MetricEvent("val_loss", 3.0, 25)])
    events += loop._paused(s, "checkpoint_seconds", lambda: time.sleep(0.02))
    assert [e.name for e in events] == ["val_loss", "eval_seconds", "checkpoint_seconds"]
    assert all(e.step == 25 for e in events)
    assert s.window.paused_s == pytest.approx(events[1].value + events[2].value)
    assert events[2].value >= 0.02


def test_a_nan_loss_stops_the_run_at_the_next_logging_step_with_where_it_happened(one_rank):
    s = new_session()
    s.state.step = 10
    s.window = loop.Window(first_step=6)
    for value in (2.0, float("nan"), 2.0):
        s.window.add(torch.tensor(value), 512)
    with pytest.raises(loop.NonFiniteLossError, match="between steps 6 and 10; training stopped before"):
        loop.train_events(s, lr=1e-3, epoch=1)


def test_the_final_validation_counts_every_validation_sequence_once(one_rank, tmp_path):
    import numpy as np

    from orchestrator.train.evaluate import evaluate_final, final_evaluation_ids, validation_totals
    from orchestrator.train.model import GPT

    dataset = _ValidationOnly(np.random.default_rng(0).integers(0, 50, (10, 17)))  # 10 sequences
    torch.manual_seed(0)  # an untrained model: about 2% of its guesses are right, so never none by chance
    model = GPT(vocab_size=50, context_length=16, d_model=16, n_layers=1, n_heads=2)
    plan = evaluation_plan()
    ids = final_evaluation_ids(plan, dataset)
    assert list(ids) == list(range(10)), "a split smaller than train.final_eval_sequences: every sequence"
    loss, accuracy, counted = evaluate_final(plan, model, dataset, torch.device("cpu"), ids)
    assert counted == 10 * 16, "3 batches of 4 rows: the 2 padding rows count for nothing"
    assert 0 < accuracy < 1 and abs(loss - math.log(50)) < 0.5
    first_row = validation_totals(model, dataset, [0], 4, 1, torch.device("cpu"))
    assert first_row[2] == 16 and model.training, "one real row; the model is back in training mode"


def evaluation_plan(final_eval_sequences: int | None = None):
    """What the evaluation reads of a plan; the spec's default unless given."""
    from orchestrator.spec.models import TrainSpec

    most = TrainSpec().final_eval_sequences if final_eval_sequences is None else final_eval_sequences
    train = SimpleNamespace(micro_batch_size=4, final_eval_sequences=most)
    return SimpleNamespace(spec=SimpleNamespace(train=train, data=SimpleNamespace(seed=1234)))


def test_the_final_validation_of_a_large_split_is_a_fixed_sample_spread_over_it():
    """A split of millions of sequences: the seeded sample of train.final_eval_sequences, the same in
    every run, spread from its start to its end; 0 asks for every sequence."""
    import numpy as np

    from orchestrator.train.evaluate import final_evaluation_ids

    dataset = _ValidationOnly(np.zeros((1, 1)))
    dataset.val_samples = 3_000_000
    ids = final_evaluation_ids(evaluation_plan(), dataset)
    assert len(ids) == 16384 == len(set(ids.tolist())) and list(ids) == sorted(ids)
    assert ids[0] < 3_000_000 * 0.01 and ids[-1] > 3_000_000 * 0.99, "spread over the whole split"
    assert np.array_equal(ids, final_evaluation_ids(evaluation_plan(), dataset)), "the same every time"
    assert len(final_evaluation_ids(evaluation_plan(0), dataset)) == 3_000_000


class _ValidationOnly:
    """A dataset of validation sequences only (``rows`` as TokenDataset's)."""

    def __init__(self, rows):
        self._rows = rows
        self.val_samples = len(rows)

    def rows(self, split, indices):
        assert split == "val"
        return self._rows[list(indices)].astype("int64")
