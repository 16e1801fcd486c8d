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


def test_xdist_groups_share_one_worker(tmp_path):
    """`make test` runs two workers with --dist loadgroup so that the tests of one xdist_group (several tests
    reading one expensive session fixture, such as test_identity's DDP trainings) run on one worker, which
    builds the fixture once. Under pytest 9 with pytest-xdist 3.8 the group was split and both workers built it."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_group.py").write_text(
        "import os, pytest\n"
        "@pytest.fixture(scope='session')\n"
        "def shared():\n"
        "    with open(os.environ['SETUPS'], 'a') as f:\n"
        "        f.write(os.environ.get('PYTEST_XDIST_WORKER', '?') + '\\n')\n"
        "@pytest.mark.xdist_group('one')\n"
        "@pytest.mark.parametrize('i', range(4))\n"
        "def test_grouped(shared, i):\n"
        "    pass\n"
        "@pytest.mark.parametrize('i', range(4))\n"
        "def test_other(i):\n"
        "    pass\n")
    (tmp_path / "none.ini").write_text("[pytest]\n")  # not the project's addopts
    setups = tmp_path / "setups"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup",
                          "-p", "no:cacheprovider", "-c", str(tmp_path / "none.ini"), "--rootdir", str(tmp_path),
                          str(tmp_path)],
                         capture_output=True, text=True, env={**os.environ, "SETUPS": str(setups)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(setups.read_text().split()) == 1, "the xdist group ran on both workers"
