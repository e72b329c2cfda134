"""Early stopping decisions and their round trip through a checkpoint's state."""

from __future__ import annotations

from orchestrator.train.early_stopping import EarlyStopping


def test_stops_after_patience_evaluations_without_enough_improvement():
    stopper = EarlyStopping("val_loss", patience=2, min_delta=0.1)
    decisions = [stopper.update(v, s) for s, v in [(1, 3.0), (2, 2.95), (3, 2.5), (4, 2.45), (5, 2.44)]]
    assert decisions == [False, False, False, False, True]
    assert stopper.best == 2.5 and stopper.best_step == 3
    assert "has not improved by more than 0.1 for 2 evaluations (best 2.5 at step 3)" in stopper.reason


def test_accuracy_improves_upwards():
    stopper = EarlyStopping("val_accuracy", patience=1)
    assert not stopper.update(0.1, 1) and not stopper.update(0.2, 2)
    assert stopper.update(0.15, 3)


def test_disabled_tracks_the_best_but_never_stops():
    stopper = EarlyStopping("val_loss", patience=1, enabled=False)
    assert [stopper.update(v, s) for s, v in [(1, 1.0), (2, 2.0), (3, 3.0)]] == [False] * 3
    assert stopper.best == 1.0


def test_state_survives_a_restart():
    before = EarlyStopping("val_loss", patience=3)
    for step, value in [(1, 2.0), (2, 2.5)]:
        before.update(value, step)
    after = EarlyStopping("val_loss", patience=3)
    after.load_state_dict(before.state_dict())
    assert (after.best, after.best_step, after.bad_evaluations) == (2.0, 1, 1)
    assert not after.update(2.6, 3) and after.update(2.7, 4)
