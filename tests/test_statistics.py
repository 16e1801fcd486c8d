"""experiments/statistics.py on hand-computed cases, cross-checked against scipy.stats where SciPy has the test.

The Student t distribution with 2 degrees of freedom has the closed form F(t) = 1/2 + t / (2 sqrt(2 + t^2)),
which gives exact p-values for three seeds without SciPy."""

import math

import pytest
from scipy import stats

from experiments.statistics import (
    EQUIVALENT,
    SUPPORTED,
    UNRESOLVED,
    VERDICTS,
    WORSE,
    apply_holm,
    combine,
    compare,
    delta_p,
    holm,
    paired_t,
    strength,
    tost,
    verdict,
)


def t2_sf(t: float) -> float:
    """P(T > t) for 2 degrees of freedom (closed form)."""
    return 0.5 - t / (2 * math.sqrt(2 + t * t))


def test_holm_on_a_small_vector():
    # sorted 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> kept monotone at 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([0.5, None, 0.01]) == [0.5, None, 0.02]  # None is untestable and not counted in m
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([1.5])


def test_paired_t_by_hand_and_against_scipy():
    r = paired_t([1.0, 2.0, 3.0])  # mean 2, sd 1, t = 2 / (1 / sqrt 3)
    assert r["mean"] == 2.0 and r["std"] == pytest.approx(1.0)
    assert r["t"] == pytest.approx(2 * math.sqrt(3))
    assert r["p"] == pytest.approx(2 * t2_sf(2 * math.sqrt(3)))  # 0.0742
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert (r["low"], r["high"]) == pytest.approx((2 - half, 2 + half))
    x = [0.3, -0.1, 0.8, 0.4, 0.2, 0.5]
    assert paired_t(x)["p"] == pytest.approx(stats.ttest_rel(x, [0.0] * 6).pvalue)
    assert paired_t([1.0])["p"] is None and paired_t([2.0, 2.0])["p"] is None  # no spread: no test


def test_tost_known_cases():
    # [-1, 0, 1]: mean 0, se 1/sqrt 3; margin 3 gives t = 3 sqrt 3 on both sides (df 2)
    r = tost([-1.0, 0.0, 1.0], margin_pct=3.0)
    assert r["p"] == pytest.approx(t2_sf(3 * math.sqrt(3)))
    assert r["p_lower"] == pytest.approx(r["p_upper"])
    assert tost([2.0, 3.0, 4.0], 3.0)["p"] == pytest.approx(0.5)  # mean on the margin: t = 0
    x = [1.2, 0.4, -0.3, 0.9, 0.1]
    r = tost(x, 2.0)
    assert r["p_lower"] == pytest.approx(stats.ttest_1samp(x, -2.0, alternative="greater").pvalue)
    assert r["p_upper"] == pytest.approx(stats.ttest_1samp(x, 2.0, alternative="less").pvalue)
    with pytest.raises(ValueError):
        tost(x, 0.0)


def test_verdicts_come_from_the_numbers():
    assert verdict(1.0, 0.01, None, 5) == SUPPORTED
    assert verdict(-1.0, 0.01, None, 5) == WORSE
    assert verdict(0.1, 0.4, 0.01, 5) == EQUIVALENT
    assert verdict(0.1, 0.4, 0.2, 5) == UNRESOLVED
    assert verdict(1.0, 0.001, None, 4) == UNRESOLVED  # fewer than five paired seeds
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, EQUIVALENT]) == UNRESOLVED
    assert combine([SUPPORTED, WORSE]) == WORSE
    assert combine([EQUIVALENT] * 3) == EQUIVALENT
    assert strength(SUPPORTED, settled=True) == "decisive"
    assert strength(SUPPORTED, settled=False) != "decisive" and strength(UNRESOLVED, True) != "decisive"
    assert set(VERDICTS) == {"supported", "worse at this budget", "equivalent", "not resolved"}


def test_delta_p_per_task():
    refs = {"semantic/miou": 20.0, "instance/mean_error_px": 5.0}
    # mIoU +50 %, instance error 5 -> 4 is +20 % (lower is better): mean over tasks 35 %
    assert delta_p({"semantic/miou": 30.0, "instance/mean_error_px": 4.0}, refs) == pytest.approx(35.0)


def test_compare_and_holm_family():
    seeds = range(5)
    a = {s: 10.0 + s + 1.0 + 0.1 * (s % 2) for s in seeds}  # better by 1.0 / 1.1
    b = {s: 10.0 + s for s in seeds}
    same = {s: 10.0 + s + 0.01 * (-1) ** s for s in seeds}  # within a fraction of a percent
    family = [compare(a, b, "semantic/miou"), compare(same, b, "semantic/miou")]
    apply_holm(family, settled=False)
    assert family[0]["verdict"] == SUPPORTED and family[0]["strength"] != "decisive"
    assert family[0]["p_holm"] >= family[0]["p"] and family[0]["p_holm"] <= 2 * family[0]["p"]
    assert family[1]["verdict"] == EQUIVALENT and family[1]["tost"]["margin_pct"] == 3.0
    err = compare({s: 1.0 for s in seeds}, {s: 2.0 + 0.1 * s for s in seeds}, "depth/mean_error_px")
    assert err["difference"]["mean"] > 0  # lower error is better: positive difference
