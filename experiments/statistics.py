"""The statistics behind every verdict of the comparison protocol (docs/comparisons.md), in one place.

- Paired Student-t test and interval of per-seed differences (scipy.stats.ttest_1samp).
- Holm's step-down correction across a family of p-values (Holm 1979): the i-th smallest of m p-values is
  multiplied by m - i + 1, then made non-decreasing, capped at 1.
- TOST equivalence (Schuirmann 1987) of paired relative differences against a margin of +-margin_pct: the
  larger of the two one-sided t-test p-values.
- Per-task Delta_p of a row against reference rows (Maninis et al. 2019): per seed, 100 / T * sum over tasks
  of the mean over the task's metrics of the relative difference, positive = better.
- The verdict vocabulary, chosen by the numbers alone (VERDICTS), and the word "decisive", used only for a
  settled schedule with a Holm-significant result.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from scipy import stats

from tasks import METRICS

SUPPORTED, WORSE, EQUIVALENT, UNRESOLVED = "supported", "worse at this budget", "equivalent", "not resolved"
VERDICTS = (SUPPORTED, WORSE, EQUIVALENT, UNRESOLVED)
ALPHA = 0.05
MARGIN_PCT = 3.0  # TOST equivalence margin: +-3 % of the reference row's value
MIN_SEEDS = 5  # fewer paired seeds give no verdict but `not resolved`
VERDICT_RULE = (
    f"paired seeds (same data order and initial encoder); two-sided paired t-test of the differences "
    f"(positive = the claimed-better row is better), Holm-corrected across the family; 'supported': Holm p < "
    f"{ALPHA} and mean > 0; 'worse at this budget': Holm p < {ALPHA} and mean < 0; 'equivalent': not "
    f"significant and the Holm-corrected TOST p < {ALPHA} for relative differences within +-{MARGIN_PCT:g} %; "
    f"otherwise (or with fewer than {MIN_SEEDS} seeds) 'not resolved'")


def paired_t(differences: Sequence[float], level: float = 0.95) -> dict:
    """Mean, sample sd, Student-t interval, t statistic and two-sided p of paired differences (H0: mean 0).
    With fewer than two values (or no spread) the interval, t and p are None."""
    x = [float(v) for v in differences]
    n = len(x)
    if n == 0:
        raise ValueError("paired_t needs at least one difference")
    mean = statistics.fmean(x)
    out = {"n": n, "mean": mean, "std": None, "low": None, "high": None, "t": None, "p": None, "values": x}
    if n < 2:
        return out
    sd = statistics.stdev(x)
    out["std"] = sd
    if sd == 0:
        return out
    res = stats.ttest_1samp(x, 0.0)
    ci = res.confidence_interval(level)
    return out | {"low": float(ci.low), "high": float(ci.high), "t": float(res.statistic), "p": float(res.pvalue)}


def t_half_width(std: float | None, n: int, level: float = 0.95) -> float | None:
    """Half-width of the Student-t interval of a mean of n values with sample sd `std` (None below n = 2): the
    interval `paired_t` gives, from a table's summary (sd and n) instead of the values."""
    if std is None or n < 2:
        return None
    return float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order; None (untestable) stays None and does not count in m."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise ValueError(f"p-values must lie in [0, 1], got {p!r}")
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def tost(relative_pct: Sequence[float], margin_pct: float = MARGIN_PCT) -> dict:
    """Two one-sided t-tests of paired relative differences (percent) against +-margin_pct: p is the larger
    of P(mean <= -margin) and P(mean >= +margin) rejected; equivalence at level a when p < a."""
    x = [float(v) for v in relative_pct]
    if margin_pct <= 0:
        raise ValueError(f"the TOST margin must be positive, got {margin_pct!r}")
    if len(x) < 2 or statistics.stdev(x) == 0:
        return {"margin_pct": margin_pct, "p": None, "p_lower": None, "p_upper": None}
    lower = stats.ttest_1samp(x, -margin_pct, alternative="greater").pvalue
    upper = stats.ttest_1samp(x, margin_pct, alternative="less").pvalue
    return {"margin_pct": margin_pct, "p": float(max(lower, upper)), "p_lower": float(lower), "p_upper": float(upper)}


def verdict(mean: float | None, p_holm: float | None, tost_p_holm: float | None, n: int,
            alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> str:
    """One of VERDICTS from the numbers alone (see VERDICT_RULE)."""
    if n < min_seeds or mean is None:
        return UNRESOLVED
    if p_holm is not None and p_holm < alpha:
        return SUPPORTED if mean > 0 else WORSE
    if tost_p_holm is not None and tost_p_holm < alpha:
        return EQUIVALENT
    return UNRESOLVED


def combine(verdicts: Sequence[str]) -> str:
    """A claim over several metrics: supported / equivalent when every metric is; worse at this budget when
    any metric is; otherwise not resolved."""
    if not verdicts:
        return UNRESOLVED
    if any(v == WORSE for v in verdicts):
        return WORSE
    for word in (SUPPORTED, EQUIVALENT):
        if all(v == word for v in verdicts):
            return word
    return UNRESOLVED


def strength(verdict_word: str, settled: bool) -> str:
    """'decisive' only for a settled schedule and a Holm-significant verdict; otherwise what limits it."""
    if verdict_word in (SUPPORTED, WORSE):
        return "decisive" if settled else "significant, schedule not settled"
    return "not decisive"


def relative_pct(better: float, than: float, metric: str) -> float:
    """100 * (better - than) / |than|, signed so that positive means `better` is better on `metric`."""
    sign = 1.0 if METRICS[metric].higher_is_better else -1.0
    if than == 0:
        raise ValueError(f"{metric}: the reference value is 0; no relative difference")
    return 100.0 * sign * (better - than) / abs(than)


def delta_p(row: Mapping[str, float], references: Mapping[str, Mapping[str, float]]) -> float:
    """Per-task Delta_p (percent, positive = better) of one seed's metrics `row` against `references`
    (metric -> that metric's reference value, e.g. the sum row's or the task's single-task row's)."""
    per_task: dict[str, list[float]] = {}
    for metric, ref in references.items():
        if metric in row:
            per_task.setdefault(METRICS[metric].task, []).append(relative_pct(row[metric], ref, metric))
    if not per_task:
        raise ValueError("no metric shared by the row and its references")
    return statistics.fmean(statistics.fmean(v) for v in per_task.values())


def compare(better: Mapping[int, float], than: Mapping[int, float], metric: str | None = None,
            relative: bool = False, margin_pct: float | None = MARGIN_PCT) -> dict:
    """Paired comparison over the seeds both hold: `better` and `than` are seed -> value of `metric`
    (difference signed so that positive = `better` is better), or, with metric None, seed -> an already
    signed per-seed statistic (e.g. Delta_p) compared with 0 (`than` ignored). Holm is applied later, per
    family (apply_holm)."""
    if metric is None:
        seeds = sorted(better)
        diffs = [float(better[s]) for s in seeds]
        rel = diffs
    else:
        seeds = sorted(set(better) & set(than))
        sign = 1.0 if METRICS[metric].higher_is_better else -1.0
        diffs = [sign * (better[s] - than[s]) for s in seeds]
        rel = [relative_pct(better[s], than[s], metric) for s in seeds if than[s]]
    if not seeds:
        return {"seeds": [], "difference": None, "relative_pct": None, "p": None, "tost": None}
    out = {"seeds": seeds, "difference": paired_t(diffs), "relative_pct": paired_t(rel) if rel else None}
    out["p"] = out["difference"]["p"]
    out["tost"] = tost(rel, margin_pct) if margin_pct is not None and len(rel) >= 2 else None
    return out


def apply_holm(family: list[dict], settled: bool) -> list[dict]:
    """Add p_holm, the TOST's Holm-corrected p, the verdict and its strength to each comparison of one
    family (in place; returned for convenience)."""
    adjusted = holm([c["p"] for c in family])
    tost_adjusted = holm([(c["tost"] or {}).get("p") for c in family])
    for c, p, q in zip(family, adjusted, tost_adjusted):
        c["p_holm"] = p
        if c.get("tost") is not None:
            c["tost"]["p_holm"] = q
        mean = c["difference"]["mean"] if c["difference"] else None
        c["verdict"] = verdict(mean, p, q, len(c["seeds"]))
        c["strength"] = strength(c["verdict"], settled)
    return family
