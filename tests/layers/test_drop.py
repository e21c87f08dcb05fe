"""The stochastic-depth schedule shared by the Swin/VMamba-style models."""

import pytest
import torch

from mambaseg.layers import stage_drop_path_rates


def test_schedule_is_one_linspace_cut_per_stage():
    rates = stage_drop_path_rates(0.3, [2, 2, 9, 2])
    assert [len(r) for r in rates] == [2, 2, 9, 2]
    flat = [v for stage in rates for v in stage]
    assert flat == pytest.approx([0.3 * i / 14 for i in range(15)], abs=1e-7)  # 0 ... 0.3 in 14 equal steps
    assert rates[0][0] == 0.0 and rates[-1][-1] == pytest.approx(0.3)


def test_descending_reverses_the_whole_schedule_before_cutting():
    up, down = stage_drop_path_rates(0.2, [2, 9, 2, 2]), stage_drop_path_rates(0.2, [2, 9, 2, 2], descending=True)
    assert [v for s in down for v in s] == [v for s in up for v in s][::-1]
    assert [len(r) for r in down] == [2, 9, 2, 2] and down[0][0] == pytest.approx(0.2)


def test_schedule_is_computed_on_the_cpu_under_a_meta_default_device():
    with torch.device("meta"):
        rates = stage_drop_path_rates(0.1, [1, 1])
    assert rates == [[0.0], [pytest.approx(0.1)]]
