"""Identity invariants of the committed run records: each is stored under the identity its config gives,
and its command and paths are repository-relative (rewriting them never changes an identity)."""

import json
from pathlib import Path

import pytest

from engine.config import config_from_dict
from experiments.records import repository_paths

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted((ROOT / "results").glob("*/runs/*.json"))


def _absolute(value) -> list[str]:
    if isinstance(value, str):
        text = value.split("=", 1)[1] if "=" in value else value
        return [value] if text.startswith("/") else []
    if isinstance(value, list):
        return [a for v in value for a in _absolute(v)]
    return []


def test_every_record_is_stored_under_the_identity_its_config_gives():
    assert len(RECORDS) > 100
    wrong = {}
    for path in RECORDS:
        data = json.loads(path.read_text())
        identity = config_from_dict(data["config"]).identity()
        if not (identity == data["identity"] == path.stem):
            wrong[str(path.relative_to(ROOT))] = identity
    assert wrong == {}


def test_every_committed_command_and_path_is_repository_relative():
    found = {}
    for path in RECORDS:
        data = json.loads(path.read_text())
        bad = _absolute(data.get("command") or []) + _absolute(data["config"].get("run_dir") or "") \
            + _absolute(data.get("data_root") or "")
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    assert found == {}


@pytest.mark.parametrize("trained_in", ["/tmp/bench-wt/runs", str(ROOT / "runs"), "runs"])
def test_repository_paths_rewrites_the_run_directory_and_keeps_the_identity(trained_in):
    data = json.loads(RECORDS[0].read_text())
    preset, identity = data["preset"], data["identity"]
    where = f"{trained_in}/{preset}/{identity}"
    data = {**data, "command": [*data["command"][:-1], f"run_dir={where}"],
            "config": {**data["config"], "run_dir": where}, "data_root": str(ROOT / "datasets" / "x")}
    out = repository_paths(data)
    assert out["command"][-1] == f"run_dir=runs/{preset}/{identity}"
    assert out["config"]["run_dir"] == f"runs/{preset}/{identity}" and out["data_root"] == "datasets/x"
    assert config_from_dict(out["config"]).identity() == identity
    assert out["command"][:-1] == data["command"][:-1] and out["metrics"] == data["metrics"]
