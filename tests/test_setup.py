"""The set-up files agree: pyproject.toml and environment.yml pin the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_reqs = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {r.replace(" ", "") for r in conda_pip} == {r.replace(" ", "") for r in pip_reqs}
    pins = {_name(r): r for r in pip_reqs}
    assert pins["torch"] == "torch==2.14.1" and pins["torchvision"] == "torchvision==0.29.1"
    assert pins["numpy"] == "numpy<2.3" and pins["pillow"] == "pillow<13"  # cityscapesscripts breaks above
    assert "opencv-python" not in pins  # only the headless build (albumentations pulls it)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    readme = ROOT / "README.md"
    if readme.exists():
        assert "make test" in readme.read_text()
