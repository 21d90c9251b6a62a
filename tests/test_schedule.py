"""Learning-rate schedules and augmentations: what each child's training follows."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.config import TrainConfig
from evolve.training.train import augment, learning_rates

STAGES = [(0.0, 1.0), (0.8, 0.1), (0.96, 0.01)]


def config(schedule: str, warmup: float = 0.0) -> TrainConfig:
    return TrainConfig(schedule=schedule, warmup=warmup, stages=STAGES if schedule == "staged" else [])


def test_cosine_falls_from_the_peak_to_near_zero():
    rates = learning_rates(config("cosine"), 0.1, 100)
    assert rates[0] == pytest.approx(0.1) and rates[-1] < 0.1 * 1e-3
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert rates[50] == pytest.approx(0.05)


def test_one_cycle_rises_to_the_peak_over_the_warmup_then_falls():
    rates = learning_rates(config("one-cycle", 0.3), 0.1, 100)
    assert rates[0] == pytest.approx(0.1 * (0.04 + 0.48 * (1 - math.cos(math.pi / 30))))
    assert max(rates) == pytest.approx(0.1) and rates.index(max(rates)) in (29, 30)
    assert all(a <= b for a, b in zip(rates[:30], rates[1:30]))
    assert all(a >= b for a, b in zip(rates[30:], rates[31:]))


def test_staged_multiplies_the_rate_from_each_stage_start():
    rates = learning_rates(config("staged"), 1e-3, 100)
    assert rates[:80] == [pytest.approx(1e-3)] * 80
    assert rates[80:96] == [pytest.approx(1e-4)] * 16 and rates[96:] == [pytest.approx(1e-5)] * 4


@pytest.mark.parametrize("schedule", ["constant", "cosine", "staged"])
def test_warmup_is_a_linear_rise_into_every_schedule(schedule):
    plain = learning_rates(config(schedule), 0.1, 200)
    warmed = learning_rates(config(schedule, 0.1), 0.1, 200)
    assert [warmed[i] for i in range(20)] == [pytest.approx(0.1 * (i + 1) / 20) for i in range(20)]
    if schedule == "cosine":  # its fall starts from the peak after the warmup
        assert warmed[20] == pytest.approx(0.1) and warmed[-1] < 1e-4
    else:
        assert warmed[20:] == plain[20:]


@settings(max_examples=60, deadline=None)
@given(schedule=st.sampled_from(["constant", "cosine", "one-cycle", "staged"]),
       warmup=st.sampled_from([0.0, 0.05, 0.3, 0.9]), batches=st.integers(1, 400),
       peak=st.floats(1e-5, 1.0))
def test_rates_are_positive_or_zero_and_never_above_the_peak(schedule, warmup, batches, peak):
    rates = learning_rates(config(schedule, warmup), peak, batches)
    assert len(rates) == batches
    assert all(0.0 <= r <= peak * (1 + 1e-9) for r in rates)


def test_shift_moves_images_by_at_most_shift_pixels_and_keeps_the_background():
    x = torch.zeros(64, 1, 12, 12)
    x[:, :, 6, 6] = 1.0
    out = augment(x, "shift", 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    rows, cols = out[:, 0].nonzero(as_tuple=True)[1:]
    assert rows.min() >= 4 and rows.max() <= 8 and cols.min() >= 4 and cols.max() <= 8
    assert len({(int(r), int(c)) for r, c in zip(rows, cols)}) > 10, "shifts vary from image to image"
    assert torch.equal(augment(x, "shift", 0, torch.Generator()), x)


def test_crop_flip_flips_about_half_and_affine_keeps_shapes():
    x = torch.arange(12.0).repeat(200, 3, 12, 1)  # every row 0..11: a flip reverses it
    out = augment(x, "crop-flip", 0, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 11).float().mean()
    assert 0.35 < flipped < 0.65 and torch.equal(out[out[:, 0, 0, 0] == 0], x[out[:, 0, 0, 0] == 0])
    assert augment(x, "affine", 2, torch.Generator().manual_seed(0)).shape == x.shape
