"""How far a preset's tables are: results/<preset>/progress.{json,md}, written by `reproduce.py aggregate`
(and `all`) without manifest names, from the run records alone.

Per manifest: rows with a record for every seed, runs recorded (lr-grid runs included), runs that can
start now, runs waiting for another run's record (a row waiting for its lr grid holds back its other
seeds), and the hours its records took (their `wall_time_s`). The total counts each training once,
however many manifests share it. No clock and no machine enter the file, so a fresh clone regenerates
it byte for byte; the README includes the Markdown instead of a hand-kept status sentence.
"""

from __future__ import annotations

from pathlib import Path

from experiments.layout import Paths
from experiments.manifest import Manifest
from experiments.plan import plan, row_seeds, runs_of, waiting_runs
from experiments.records import Record
from infra.atomic import write_json, write_text


def _hours(records: dict[str, Record], identities) -> float:
    return round(sum(records[i].data.get("wall_time_s") or 0.0 for i in identities) / 3600, 2)


def progress(preset: str, manifests: list[Manifest], records: dict[str, Record], paths: Paths = Paths()) -> dict:
    """{"preset", "manifests": [per manifest counts], "total": {...}} (see the module docstring)."""
    rows = []
    for m in manifests:
        pending: list = []
        runs = runs_of(m, preset, None, paths, None, records, pending)
        done = {r.identity for r in runs if r.identity in records}
        own = {(r.row.name, r.seed) for r in runs if not r.tag and r.identity in records}
        complete = sum(all((row.name, s) in own for s in row_seeds(m, row)) for row in m.rows)
        rows.append({"manifest": m.name, "title": m.title, "rows": len(m.rows), "rows_complete": complete,
                     "recorded": len(done), "to_start": len({r.identity for r in runs} - done),
                     "waiting": waiting_runs(pending), "hours": _hours(records, done)})
    pending = []
    jobs = plan(preset, manifests, None, paths, None, records, pending)
    used = {j.run.identity for j in jobs if j.run.identity in records}
    total = {"recorded": len(used), "to_start": sum(j.run.identity not in records for j in jobs),
             "waiting": waiting_runs(pending), "hours": _hours(records, used),
             "records": len(records), "records_hours": _hours(records, records)}
    return {"preset": preset, "manifests": rows, "total": total}


def markdown(p: dict) -> str:
    t = p["total"]
    left = t["to_start"] + t["waiting"]
    lines = [f"**Progress of preset {p['preset']}** (generated from the run records by `python reproduce.py "
             f"aggregate --preset {p['preset']}`): "
             + ("complete: every row of every table has a record for each of its seeds."
                if not left else
                f"{t['recorded']} of the tables' trainings recorded, {t['to_start']} can start now and "
                f"{t['waiting']} more wait for other runs' records (rows wait for their lr grid or for the "
                f"weights of another row; at most that many: a row two tables share counts twice). "
                f"`python reproduce.py all --preset {p['preset']}` trains the rest "
                f"(the runner resumes)."),
             "",
             "| Table | Rows with every seed | Runs recorded | Can start now | Waiting | Hours in its records |",
             "|---|---|---|---|---|---|"]
    for r in p["manifests"]:
        lines.append(f"| {r['manifest']} | {r['rows_complete']} of {r['rows']} | {r['recorded']} | "
                     f"{r['to_start']} | {r['waiting']} | {r['hours']:.1f} |")
    lines += ["", f"Hours: the sum of the records' `wall_time_s` (one training's wall time, as many CPU threads "
              f"as its launch gave it); the tables share some trainings, counted once in the total: "
              f"{t['hours']:.1f} h in the tables' {t['recorded']} records, {t['records_hours']:.1f} h in all "
              f"{t['records']} records of results/{p['preset']}/runs/ (including runs no table reads now)."]
    return "\n".join(lines) + "\n"


def write_progress(preset: str, manifests: list[Manifest], records: dict[str, Record],
                   paths: Paths = Paths()) -> list[Path]:
    p = progress(preset, manifests, records, paths)
    out = paths.results / preset
    write_json(out / "progress.json", p)
    write_text(out / "progress.md", markdown(p))
    return [out / "progress.json", out / "progress.md"]
