"""Delta_m: a multi-task model's relative difference from the single-task baselines, in the two
conventions of the literature, with a 95 % confidence interval over paired seeds.

For metrics j with values M_j (multi-task) and B_j (the single-task baseline of j's task):

- **pooled** (Navon et al. 2022, Nash-MTL; Liu et al. 2023, FAMO): positive = worse,
      Delta_m = 100 / |J| * sum_j (-1)^{h_j} (M_j - B_j) / B_j,   h_j = 1 if higher is better;
- **per task** (Maninis et al. 2019; LibMTL): positive = better, each task's metrics averaged first,
      Delta_p = 100 / T * sum_t 1 / |J_t| * sum_{j in t} (-1)^{l_j} (M_j - B_j) / B_j,   l_j = 1 if lower is better.

Seeds are paired: seed s of the method is compared with seed s of each baseline (same data order and
initial encoder), giving one Delta per seed; the table reports their mean and the Student-t 95 %
interval mean +- t_{0.975, n-1} sd / sqrt(n) (none for one seed).
"""

from __future__ import annotations

import math
import statistics

from scipy import stats

from tasks import METRICS

CONVENTIONS = {
    "pooled": "Delta_m = 100/|J| * sum_j (-1)^h_j (M_j - B_j) / B_j over all metrics j (h_j = 1 if higher is "
              "better); positive = worse (Nash-MTL / FAMO convention)",
    "per_task": "Delta_p = 100/T * sum_t mean_{j in t} (-1)^l_j (M_j - B_j) / B_j, each task's metrics averaged "
                "first (l_j = 1 if lower is better); positive = better (LibMTL / Maninis et al. convention)",
}


def relative_differences(method: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """(M_j - B_j) / B_j signed so that positive = better, for every metric both have."""
    out = {}
    for key in method:
        if key not in baseline:
            continue
        sign = 1.0 if METRICS[key].higher_is_better else -1.0
        out[key] = sign * (method[key] - baseline[key]) / baseline[key]
    return out


def delta_m(method: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """Both conventions for one seed: {"pooled": ..., "per_task": ...} in percent."""
    rel = relative_differences(method, baseline)
    if not rel:
        raise ValueError("no metric shared by the method and its baselines")
    pooled = -100.0 * statistics.fmean(rel.values())
    per_task: dict[str, list[float]] = {}
    for key, value in rel.items():
        per_task.setdefault(METRICS[key].task, []).append(value)
    return {"pooled": pooled, "per_task": 100.0 * statistics.fmean(statistics.fmean(v) for v in per_task.values())}


def confidence_interval(values: list[float], level: float = 0.95) -> dict:
    """mean, Student-t interval (None for one value), sample sd, n and the values."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "std": None, "n": n, "values": list(values)}
    sd = statistics.stdev(values)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "std": sd, "n": n, "values": list(values)}


def paired_delta_m(method: dict[int, dict[str, float]], baselines: dict[int, dict[str, float]],
                   metrics: list[str]) -> dict | None:
    """Both conventions with 95 % intervals over the seeds present for the method and every baseline.

    `method` and `baselines`: seed -> {metric: value} (baselines: each metric from its task's
    single-task run of that seed). None when no seed is paired."""
    seeds = sorted(s for s in method if s in baselines
                   and all(m in method[s] and m in baselines[s] for m in metrics))
    if not seeds:
        return None
    per_seed = [delta_m({m: method[s][m] for m in metrics}, {m: baselines[s][m] for m in metrics}) for s in seeds]
    return {"seeds": seeds, **{c: confidence_interval([d[c] for d in per_seed]) for c in CONVENTIONS}}
