"""The sample order and the data cursor: independent of the number of ranks, exact on resume."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.data.cursor import DataCursor, SampleOrder, evaluation_sample, rank_positions


def _global_batches(order: SampleOrder, world: int, accumulation: int, micro: int, steps: int, epoch=1):
    """The samples each step trains on, gathered over ranks and micro steps as the feeder reads them."""
    batches, position = [], 0
    for _ in range(steps):
        seen = []
        for micro_step in range(accumulation):
            for rank in range(world):
                start, count = rank_positions(position, micro_step, rank, world, micro)
                seen.extend(order.at(epoch, start, count).tolist())
        batches.append(sorted(seen))
        position += world * accumulation * micro
    return batches


@pytest.mark.parametrize("window", [1 << 22, 7])  # one permutation, and windows of 7 samples
def test_every_split_of_a_global_batch_sees_the_same_samples(window):
    order = SampleOrder(1000, seed=3, window=window)
    one = _global_batches(order, world=1, accumulation=4, micro=4, steps=30)
    two = _global_batches(order, world=2, accumulation=2, micro=4, steps=30)
    four = _global_batches(order, world=4, accumulation=1, micro=4, steps=30)
    assert one == two == four
    flat = [i for batch in one for i in batch]
    assert len(set(flat)) == len(flat)  # no sample twice in an epoch


@pytest.mark.parametrize("window", [1 << 22, 64])
def test_an_epoch_is_a_permutation_that_changes_with_the_epoch_and_seed(window):
    order = SampleOrder(500, seed=11, window=window)
    first = order.at(1, 0, 500)
    assert sorted(first.tolist()) == list(range(500))
    assert not np.array_equal(first, order.at(2, 0, 500))
    assert not np.array_equal(first, SampleOrder(500, seed=12, window=window).at(1, 0, 500))
    np.testing.assert_array_equal(order.at(1, 123, 77), first[123:200])  # any slice of the same order


def test_the_cursor_rolls_over_epochs_and_round_trips():
    cursor = DataCursor(seed=1, samples_per_epoch=24, dataset="abc")
    ends = [cursor.advance(8) for _ in range(4)]
    assert ends == [False, False, True, False] and (cursor.epoch, cursor.sample_in_epoch) == (2, 8)
    again = DataCursor(seed=1, samples_per_epoch=24, dataset="abc")
    again.load_state_dict(cursor.state_dict())
    assert again == cursor


def test_the_cursor_refuses_another_dataset_or_order():
    saved = DataCursor(seed=1, samples_per_epoch=24, dataset="abc").state_dict()
    with pytest.raises(ValueError, match="dataset abc"):
        DataCursor(seed=1, samples_per_epoch=24, dataset="xyz").load_state_dict(saved)
    with pytest.raises(ValueError, match=r"global batch or train\.seed changed"):
        DataCursor(seed=1, samples_per_epoch=32, dataset="abc").load_state_dict(saved)


def test_the_evaluation_sample_is_fixed_spread_and_nested():
    small, large = evaluation_sample(10_000, 64, seed=5), evaluation_sample(10_000, 256, seed=5)
    np.testing.assert_array_equal(small, evaluation_sample(10_000, 64, seed=5))
    assert set(small) <= set(large)  # a larger sample (more ranks) keeps the smaller one's samples
    assert small.min() < 1000 and small.max() > 9000  # spread over the whole split, not its start
    np.testing.assert_array_equal(evaluation_sample(50, 64, seed=5), np.arange(50))
