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


def test_primary_endpoints_come_first_and_the_intervals_are_said_to_be_unadjusted():
    """The paragraph leads with the pre-registered primary endpoints (per-task Delta_p, Holm across them) and
    says that the intervals are not adjusted, so an interval that excludes 0 may still be 'not resolved'."""
    primary = [{"name": "uw-beats-sum", "verdict": "supported", "seeds": [0, 1, 2, 3, 4],
                "difference": {"mean": 2.84, "low": 1.28, "high": 4.41}},
               {"name": "uw-beats-single", "verdict": "equivalent", "seeds": [0, 1, 2, 3, 4],
                "difference": {"mean": 0.38, "low": -1.57, "high": 2.33}},
               {"name": "uw-beats-dwa", "verdict": "not resolved", "seeds": [], "difference": None}]
    t = {"title": "Claims", "preset": "p", "protocol": {"iterations": 960, "settled": False, "score_split": "test"},
         "comparisons": {"margin_pct": 3.0, "primary": primary, "secondary": [
             comparison("uw-beats-sum", "semantic/miou", "sum", "not resolved", (0.5, 0.1, 0.9))]}}
    text = verdict_paragraph(t)
    assert text.count("\n") == 1 and "not adjusted for multiplicity" in text
    head, secondary = text.split("Secondary comparisons")
    assert "Primary endpoints (per-task Δp %, Holm across them)" in head
    assert "uw-beats-sum: +2.84 [+1.28, +4.41], supported (n = 5)" in head
    assert "uw-beats-single: +0.38 [-1.57, +2.33], equivalent within ±3 % (n = 5)" in head
    assert "uw-beats-dwa: not resolved (no paired seed yet)" in head
    assert "*Not resolved* (1): uw-beats-sum, semantic mIoU vs sum: +0.500 [+0.100, +0.900] %" in secondary
