"""Periodic evaluations estimate the whole validation split: their fixed, seeded sample is spread over
it, so on a corpus of many files their loss agrees with the whole split's within the sample's
standard error, where the first sequences of the split (the alphabetically first files) would not."""

from __future__ import annotations

import math
import random

import pytest

from tests.train.harness import engine_spec, make_plan, metric_history, output, run_engine

pytestmark = pytest.mark.slow

FILES, EASY = 30, 10  # the first 10 files repeat one sentence; the others are word salad
STEPS = 100  # enough for the repeated sentence to be learnt far better than the salad


def _corpus(root) -> None:
    from orchestrator.data.corpus import python_docs_text

    words = python_docs_text().split()[:5000]
    rng = random.Random(3)
    (root / "corpus").mkdir()
    for index in range(FILES):
        if index < EASY:
            paragraphs = ["the cat sat on the mat and the dog sat on the log. " * 12 for _ in range(40)]
        else:
            paragraphs = [" ".join(rng.choices(words, k=120)) for _ in range(40)]
        (root / "corpus" / f"part-{index:02d}.txt").write_text("\n\n".join(paragraphs))


def _per_sequence_losses(plan) -> list[float]:
    """Each validation sequence's mean loss under the run's last checkpoint."""
    import torch
    from torch.nn import functional as F

    from orchestrator.data.dataset import TokenDataset
    from orchestrator.generate import load_from_run

    model = load_from_run(plan.spec, plan.checkpoint_store(), plan.data.tokenizer_path, "latest").model
    data = TokenDataset.open(plan.data.dataset_uri, plan.data.manifest_digest, plan.spec.model.context_length)
    losses = []
    with torch.no_grad():
        for start in range(0, data.val_samples, 64):
            rows = torch.from_numpy(data.rows("val", range(start, min(start + 64, data.val_samples))))
            logits = model(rows[:, :-1])
            loss = F.cross_entropy(logits.transpose(1, 2), rows[:, 1:], reduction="none").mean(dim=1)
            losses.extend(loss.tolist())
    return losses


def test_the_periodic_validation_loss_estimates_the_whole_split(tmp_path):
    from orchestrator.data.cursor import evaluation_sample

    _corpus(tmp_path)
    text = (
        engine_spec(steps=STEPS, interval=STEPS, eval_interval=STEPS)
        + "data: {corpus: files, files: ['corpus/*.txt']}\n"
    )
    plan = make_plan(tmp_path, text, "evaluation-sample")
    result = run_engine(plan)
    assert result.returncode == 0, output(result)
    losses = _per_sequence_losses(plan)
    whole = sum(losses) / len(losses)
    spread = math.sqrt(sum((x - whole) ** 2 for x in losses) / (len(losses) - 1))
    train = plan.spec.train
    sample = evaluation_sample(
        len(losses), train.eval_batches * train.micro_batch_size * 2, plan.spec.data.seed
    )
    n = len(sample)
    standard_error = spread / math.sqrt(n) * math.sqrt(1 - n / len(losses))  # without replacement
    periodic = sum(losses[i] for i in sample) / n
    first = sum(losses[:n]) / n  # what the first sequences of the split (the first files) would say
    assert abs(periodic - whole) < 3 * standard_error, (periodic, whole, standard_error)
    assert abs(first - whole) > 3 * standard_error, "the corpus does make a slice of its start biased"
    # and the run's own figures: the last periodic evaluation against the whole-split validation
    logged = dict(metric_history(plan, "val_loss"))[STEPS]
    final = dict(metric_history(plan, "final_val_loss"))[STEPS]
    assert final == pytest.approx(whole, rel=1e-3)
    assert abs(logged - final) < 3 * standard_error, (logged, final, standard_error)
