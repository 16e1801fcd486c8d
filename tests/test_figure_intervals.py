"""Figure 2's bars are 95 % Student-t intervals of the mean over seeds (issue: the bars were the seed sd)."""
import math

import pytest

from experiments.plots import _value
from experiments.statistics import paired_t, t_half_width


def test_sweep_bars_are_the_95_percent_student_t_interval_of_the_mean():
    # t(0.975, 2) = 4.302653 (tables); half-width = t * sd / sqrt(n)
    summary = {"mean": 10.0, "std": 1.0, "n": 3, "values": [9.0, 10.0, 11.0]}
    mean, half = _value(summary)
    assert mean == 10.0
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    # t(0.975, 4) = 2.776445
    assert t_half_width(2.0, 5) == pytest.approx(2.776445 * 2.0 / math.sqrt(5), rel=1e-6)
    values = [1.0, 2.5, 4.0, 3.0, 7.0]  # the same interval paired_t gives from the values
    t = paired_t(values)
    assert t_half_width(t["std"], 5) == pytest.approx(t["high"] - t["mean"])


def test_one_seed_or_a_paper_number_has_no_bar():
    assert _value({"mean": 3.0, "std": None, "n": 1, "values": [3.0]}) == (3.0, None)
    assert _value(4.5) == (4.5, None)
    assert _value(None) == (None, None)
