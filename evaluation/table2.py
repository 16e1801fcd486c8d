"""Table 2's scores, read from what `evaluate.py --official` stored in a run record (its "official" object).

The official evaluation (evaluation/official.py) writes, per run: the pixel-level scores (IoU / iIoU per class
and category), the instance AP per grouping method and per class, the grouping time and the disparity errors
at the files' resolution. `table2_values` gathers them over a row's seeds as lists of values, in the nested
shape the Table 2 analysis (experiments/analyses/official.py) summarises; the task-specific names live here.
Torch-free.
"""

from __future__ import annotations

import math

PIXEL_SCORES = ("iou_class", "iiou_class", "iou_category", "iiou_category")
INSTANCE_SCORES = ("ap", "ap50", "ap100m", "ap50m")
DEPTH_SCORES = ("depth/mean_error_px", "depth/rmse_px")
REFERENCE_WIDTH = 2048  # the paper's full resolution: Table 2's disparity errors are pixels of a 2048-wide frame


def _times(value: float | None, factor: float) -> float | None:
    """value x factor; None (a NaN that strict JSON wrote as null) stays None."""
    return None if value is None else value * factor


def table2_values(officials: list[dict], grouping: list[str]) -> dict:
    """The finite values of each Table 2 score over `officials` (one run record's "official" object per seed):
    {"pixel": {score: [v]}, "instance": {method: {score: [v], "class_ap": {class: [v]}, "s_per_frame": [v]}},
    "depth": {key: [v], key@2048: [v]}}. The disparity errors are also converted to pixels of a 2048-wide frame
    (x 2048 / the files' width; empty without a file size)."""
    def values(get) -> list[float]:
        return [v for v in (get(o) for o in officials) if v is not None and math.isfinite(v)]

    def ap(o: dict, method: str) -> dict:
        return (o.get("instance_ap") or {}).get(method) or {}

    out: dict = {"pixel": {k: values(lambda o, k=k: (o.get("official") or {}).get(k)) for k in PIXEL_SCORES},
                 "instance": {}, "depth": {}}
    for method in grouping:
        classes = sorted({c for o in officials for c in (ap(o, method).get("class_ap") or {})})
        out["instance"][method] = {k: values(lambda o, k=k, m=method: ap(o, m).get(k)) for k in INSTANCE_SCORES} | {
            "class_ap": {c: values(lambda o, c=c, m=method: (ap(o, m).get("class_ap") or {}).get(c)) for c in classes},
            "s_per_frame": values(lambda o, m=method: (o.get("grouping_s_per_frame") or {}).get(m))}
    file_size = officials[0].get("file_size") if officials else None
    width = file_size[1] if file_size else None
    for key in DEPTH_SCORES:
        out["depth"][key] = values(lambda o, key=key: (o.get("full_resolution") or {}).get(key))
        out["depth"][key + "@2048"] = values(
            lambda o, key=key: _times((o.get("full_resolution") or {}).get(key), REFERENCE_WIDTH / width)
            if width else None)
    return out
