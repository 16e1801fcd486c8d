"""The README's one-paragraph verdict summary is generated from a protocol table's numbers alone."""
from experiments.protocol import verdict_paragraph


def comparison(claim, metric, than, verdict, diff):
    d = None if diff is None else {"mean": diff[0], "low": diff[1], "high": diff[2]}
    return {"claim": claim, "metric": metric, "than": than, "verdict": verdict, "difference": d,
            "seeds": [0, 1, 2, 3, 4] if d else []}


def test_each_comparison_lands_in_its_verdicts_group_with_its_interval():
    t = {"title": "Claims", "preset": "p",
         "protocol": {"iterations": 480, "settled": False, "score_split": "test"},
         "comparisons": {"margin_pct": 3.0, "secondary": [
             comparison("uw-beats-sum", "semantic/miou", "sum", "supported", (2.5, 1.25, 3.75)),
             comparison("uw-beats-sum", "depth/mean_error_px", "sum", "equivalent", (0.001, -0.002, 0.004)),
             comparison("uw-beats-sum", "instance/mean_error_px", "sum", "worse at this budget", (-0.5, -0.8, -0.2)),
             comparison("uw-beats-single", "semantic/miou", "seg", "not resolved", (0.1, -1.0, 1.2)),
             comparison("uw-beats-single", "depth/mean_error_px", "depth", "not resolved", None)]}}
    text = verdict_paragraph(t)
    assert text.count("\n") == 1 and "480 iterations, not settled" in text and "5 paired seeds" in text
    supported, rest = text.split("*Supported* (1): ")[1].split("*Equivalent* (1): ")
    assert "uw-beats-sum, semantic mIoU vs sum: +2.500 [+1.250, +3.750] % (n = 5)" in supported
    equivalent, rest = rest.split("*Worse at this budget* (1): ")
    assert "depth" in equivalent and "+0.001 [-0.002, +0.004] px" in equivalent
    worse, unresolved = rest.split("*Not resolved* (2): ")
    assert "instance" in worse and "-0.500 [-0.800, -0.200] px" in worse
    assert "uw-beats-single, semantic mIoU vs seg" in unresolved and "1 without a paired seed yet" in unresolved
