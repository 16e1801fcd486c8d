"""Analyses as plug-ins: a new kind of table is one module with @register("kind"), and a manifest that declares
it gets its columns, section and figure from aggregate and report, with no edit to either."""

import importlib
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from engine.config import ConfigError
from experiments import analyses
from experiments.layout import Paths
from experiments.manifest import find_manifests, load_manifest
from experiments.plan import resolve
from experiments.report import write_report

ROOT = Path(__file__).resolve().parents[1]
PRESET = "mini"

TOY = '''
from experiments.analyses import Analysis, register
from infra.atomic import write_text


@register("toy-count")
class ToyCount(Analysis):
    """Counts each row's seeds and writes a one-line 'figure'."""

    def row(self, ctx, rc, entry):
        return {"toy_seeds": len(rc.found)}

    def columns(self, ctx, rows):
        return {"toy": {"rows": len(rows), "seeds": sum(r["toy_seeds"] for r in rows)}}

    def figures(self, ctx, t, out_dir):
        out = out_dir / f"{ctx.manifest.name}-toy.txt"
        write_text(out, f"{t['toy']['seeds']} seeds\\n")
        t["toy_image"] = out.name
        return [out]

    def markdown(self, t):
        return ["", "### Toy", "", f"{t['toy']['seeds']} seeds over {t['toy']['rows']} rows ({t['toy_image']})."]
'''

MANIFEST = """
title: Toy table
seeds: [0, 1]
analyses: [toy-count]
columns: [semantic/miou]
rows:
  - name: semantic-only
    config: {tasks: [semantic], method: {name: fixed, fixed: {weights: {semantic: 1.0}}}}
"""


@pytest.fixture
def toy_kind(tmp_path, monkeypatch):
    """The toy analysis in a module of its own, outside the package, registered for this test only."""
    pkg = tmp_path / "toy_pkg"
    pkg.mkdir()
    (pkg / "toy_kind_module.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(pkg))
    module = importlib.import_module("toy_kind_module")
    yield module
    analyses.unregister("toy-count")
    sys.modules.pop("toy_kind_module", None)


@pytest.fixture
def paths(tmp_path) -> Paths:
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / f"{PRESET}.yaml").write_text("model: {backbone: resnet18}\noptim: {iterations: 5}\n")
    return Paths(configs=configs, runs=tmp_path / "runs", results=tmp_path / "results")


def test_a_registered_kind_fills_its_table_from_a_manifest_that_declares_it(toy_kind, paths):
    (paths.manifests / "toy.yaml").write_text(MANIFEST)
    m = find_manifests(paths.manifests, ["toy"])[0]
    assert [a.name for a in analyses.declared(m)] == ["toy-count"]
    run = resolve(m, m.rows[0], 0, PRESET, paths)
    record = {"metrics": {"semantic/miou": 40.0}, "config": run.config.to_dict(), "identity": run.identity,
              "seed": 0, "command": ["python", "train.py", f"seed={0}"], "git_commit": "abc", "step": 5,
              "iterations": 5, "preset": PRESET}
    paths.records(PRESET).mkdir(parents=True)
    (paths.records(PRESET) / f"{run.identity}.json").write_text(json.dumps(record))

    written = write_report(m, PRESET, paths)

    out = paths.results / PRESET
    t = json.loads((out / "toy.json").read_text())
    assert t["toy"] == {"rows": 1, "seeds": 1}
    assert t["rows"][0]["toy_seeds"] == 1
    assert (out / "toy-toy.txt").read_text() == "1 seeds\n" and out / "toy-toy.txt" in written
    md = (out / "toy.md").read_text()
    assert "### Toy" in md and "1 seeds over 1 rows (toy-toy.txt)." in md
    assert md.index("### Toy") < md.index("### Provenance")  # a section sits above the provenance


def test_a_manifest_without_the_kind_does_not_run_it(toy_kind, paths):
    shutil.copy(ROOT / "configs" / "experiments" / "table1.yaml", paths.manifests / "table1.yaml")
    m = find_manifests(paths.manifests, ["table1"])[0]
    assert "toy-count" not in [a.name for a in analyses.declared(m)]
    assert "toy-count" in analyses.analyses()


def test_an_unknown_analysis_is_refused_with_the_registered_ones(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.replace("toy-count", "no-such-kind"))
    with pytest.raises(ConfigError, match=r"unknown analysis 'no-such-kind'; registered analyses: .*sweep"):
        load_manifest(bad)


def test_the_committed_manifests_declare_their_kinds_by_their_keys():
    kinds = {m: [a.name for a in analyses.declared(load_manifest(ROOT / "configs" / "experiments" / f"{m}.yaml"))]
             for m in ("table1", "table2", "figure2a", "benchmark", "appendixb", "claims", "claims-pilot",
                       "protocol-benchmark", "protocol-claims", "protocol-pilot")}
    assert kinds == {"table1": ["curves"], "table2": ["table2"], "figure2a": ["sweep"], "benchmark": ["benchmark"],
                     "appendixb": ["appendix-b"], "claims": ["claims"], "claims-pilot": ["pilot"],
                     "protocol-benchmark": ["lr-grid", "benchmark", "pairwise"],
                     "protocol-claims": ["lr-grid", "protocol-claims"],
                     "protocol-pilot": ["lr-grid", "schedule"]}


def test_a_kind_registered_twice_under_one_name_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        @analyses.register("sweep")
        class Other(analyses.Analysis):
            pass


def test_the_package_documents_its_protocol():
    doc = textwrap.dedent(analyses.base.__doc__)
    for hook in ("row(", "columns(", "figures(", "outputs(", "markdown(", "method_column(", "document("):
        assert hook in doc
