"""Launcher profiles: how jobs are submitted (configs/launchers/<name>.yaml, overridable by KEY=VALUE).

    executor: slurm          # slurm | local (submitit's local executor: processes on this machine) | debug
    partition: gpu           # SLURM partition (--partition)
    time_min: 240            # time limit per job, minutes (a preempted job is requeued with the same limit)
    nodes: 1                 # nodes per job (more than 1: one multi-node DDP training per job)
    tasks_per_node: 1        # processes per node (DDP: one per GPU, e.g. equal to gpus_per_node)
    gpus_per_node: 1
    cpus_per_task: 8
    mem_gb: null
    account: null            # --account
    qos: null                # --qos
    array_parallelism: 64    # array tasks running at once (%N); the local executor: jobs at once
    signal: USR1             # the scheduler's preemption / time-limit signal (sbatch --signal=USR1@delay)
    signal_delay_s: 120      # seconds between that signal and the kill: time to reach a checkpoint
    max_requeues: 20         # preemptions of one run before it is recorded as failed
    max_timeouts: 3          # time limits reached before it is recorded as failed (submitit's countdown)
    max_lost: 3              # jobs of one run that died without a word (node failure, OOM kill) and were resubmitted
    poll_s: 30               # how often the driver looks at its jobs
    folder: null             # submitit's job files and logs (default: runs/<preset>/submitit)
    setup: []                # shell lines run before the job (module load ..., source venv/bin/activate)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engine.config import ConfigError
from experiments.layout import ROOT

PROFILES = ROOT / "configs" / "launchers"
EXECUTORS = ("slurm", "local", "debug")


@dataclass
class Profile:
    """One launcher profile (see the module docstring for each field)."""

    name: str = "local"
    executor: str = "local"
    partition: str | None = None
    time_min: int = 240
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    signal: str = "USR1"
    signal_delay_s: int = 120
    max_requeues: int = 20
    max_timeouts: int = 3
    max_lost: int = 3
    poll_s: float = 30.0
    folder: str | None = None
    setup: list[str] = field(default_factory=list)

    def check(self) -> Profile:
        """ValueError naming the field for a value that cannot work; returns self."""
        if self.executor not in EXECUTORS:
            raise ConfigError(f"launcher profile {self.name}: executor {self.executor!r} is not one of "
                              f"{', '.join(EXECUTORS)}")
        for key in ("time_min", "nodes", "tasks_per_node", "array_parallelism"):
            if getattr(self, key) < 1:
                raise ConfigError(f"launcher profile {self.name}: {key} must be at least 1, got {getattr(self, key)}")
        for key in ("gpus_per_node", "signal_delay_s", "max_requeues", "max_timeouts", "max_lost"):
            if getattr(self, key) < 0:
                raise ConfigError(f"launcher profile {self.name}: {key} must be at least 0, got {getattr(self, key)}")
        if self.signal not in ("USR1", "USR2"):
            raise ConfigError(f"launcher profile {self.name}: signal must be USR1 or USR2 (train.py checkpoints on "
                              f"either), got {self.signal!r}")
        if self.executor != "slurm" and self.nodes > 1:
            raise ConfigError(f"launcher profile {self.name}: the {self.executor} executor runs on one node; "
                              f"nodes={self.nodes} needs executor: slurm")
        return self

    @property
    def processes(self) -> int:
        """Processes of one training (DDP world size)."""
        return self.nodes * self.tasks_per_node


FIELDS = {f.name: f for f in dataclasses.fields(Profile)}


def _coerce(key: str, text: str):
    """KEY=VALUE from the command line: the value read as YAML (numbers, null, lists), checked against the field."""
    value = yaml.safe_load(text) if text != "" else None
    return _checked(key, value, "--launcher-set")


def _checked(key: str, value, where: str):
    if key not in FIELDS or key == "name":
        valid = ", ".join(k for k in FIELDS if k != "name")
        raise ConfigError(f"{where}: unknown launcher setting {key!r}; valid settings: {valid}")
    default = FIELDS[key].default
    if key == "setup":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: setup must be a list of shell lines, got {value!r}")
        return value
    if value is None:
        if default is None:
            return None
        raise ConfigError(f"{where}: {key} cannot be empty")
    kind = type(default) if default is not None else (float if key == "mem_gb" else int if key == "cpus_per_task"
                                                      else str)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key} expects {kind.__name__}, got {value!r}")
    return value


def load_profile(name: str, overrides: list[str] | None = None, directory: Path = PROFILES) -> Profile:
    """configs/launchers/<name>.yaml (or a path to a YAML file) with KEY=VALUE overrides applied."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = directory / f"{name}.yaml"
    if not path.is_file():
        valid = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ConfigError(f"launcher profile {name!r} not found ({path}); profiles in {directory}: "
                          f"{', '.join(valid) or 'none'}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of launcher settings")
    values = {k: _checked(k, v, str(path)) for k, v in data.items()}
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--launcher-set expects KEY=VALUE, got {item!r}")
        values[key.strip()] = _coerce(key.strip(), text.strip())
    return Profile(name=path.stem, **values).check()
