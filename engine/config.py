"""The typed experiment configuration: dataclasses, YAML presets, dotted overrides, experiment identity.

A run is described by one `Config`. It is built from zero or more YAML files applied in order
(a preset, then overrides) and then `key=value` overrides with dotted keys (`data.root=/x`,
`method.fixed.weights.semantic=0.89`). Unknown keys and values of the wrong type are errors that
list what is valid; every method's options are validated when the config is loaded.

Methods (losses.METHODS) keep their options in their own dataclass, under `method.<name>`:

    method:
      name: fixed                       # the method this run trains with
      fixed: {weights: {semantic: 0.9}}
      uncertainty: {form: gal}          # options of a method not selected are checked, then ignored

The experiment identity (`Config.identity()`) hashes only the values that differ from the
defaults (and, of the method options, only the selected method's), plus a schema version: adding a
method, or an option with a default, never changes the identity of an existing experiment.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data.frames import root_setting
from data.synthetic.profile import PROFILES
from losses import METHODS, build_weighting, method_class
from tasks import TASK_KINDS, TASKS, check_tasks

# Version of the identity scheme; bump it only if `Config.identity` itself changes meaning.
IDENTITY_SCHEMA = 1
# Fields that do not change the trained weights: not part of the identity.
# The speed switches check_finite, compile and data.resident change when and where the same numbers are
# computed, not the numbers (tests/test_speed.py checks each against the default path).
NOT_IDENTITY = frozenset({"name", "run_dir", "log_every", "val_every", "ckpt_every", "wandb", "eval_batch_size",
                          "data.root", "data.num_workers", "data.cache", "data.resident", "check_finite",
                          "compile"})


@dataclass
class DataConfig:
    """Where the frames come from and how they are augmented."""

    root: str | None = None  # None: $CITYSCAPES_DATASET
    train_split: str = "train"
    val_split: str = "val"
    # null: the final metrics are scored on val_split (as before the option); a split name (e.g. test): the
    # final metrics are scored on that held-out split, and val_split's final scores are kept as val_metrics
    # for selection (docs/comparisons.md). Part of the identity when set (the record holds other numbers).
    test_split: str | None = None
    size: tuple[int, int] | None = (128, 256)  # (H, W) the whole frame is resized to; None: file size
    crop: tuple[int, int] | None = None  # (H, W) random crop after scaling (train only)
    scale: tuple[float, float] | None = None  # random scale range (train only), e.g. (0.7, 2.0)
    flip: bool = True  # random horizontal flip (train only)
    jitter: bool = False  # photometric jitter on the image (train only)
    train_frames: int | None = None  # use only the first N train frames (None: all)
    val_frames: int | None = None  # use only the first N val frames (None: all)
    num_workers: int = 2
    # auto: the Tiny cache ROOT/cache/<H>x<W>/<split> when built (python -m data.cache), else the PNGs;
    # off: always the PNGs; a directory: that cache, required. Items are identical either way.
    cache: str = "auto"
    # null: no check; v1 or calibrated: train.py and evaluate.py require the root to hold a synthetic set of
    # that generator profile (its .synthetic marker). Part of the identity when set (a different dataset);
    # the default keeps the identity of runs made before the option.
    synthetic_profile: str | None = None
    # true: the whole training split (built once from the cache, or the PNGs) lives on the training device and
    # batches are drawn there in the loader's order, flips applied on the device (data/resident.py): no loader
    # workers, no host-to-device copies. Needs a fixed size without crop, scale or jitter.
    resident: bool = False
    # cityscapes: the official layout (data/cityscapes.py); npy: the preprocessed 2-task layout of nash-mtl / FAMO /
    # LibMTL (data/npy.py), read at its own size, trained with its papers' scale-crop and flip when `flip` is set.
    format: str = "cityscapes"


@dataclass
class ModelConfig:
    """DeepLabV3-style encoder and one decoder per task (docs/design.md decisions 2 and 3)."""

    backbone: str = "resnet101"
    output_stride: int = 8
    backbone_weights: str | None = None  # local torchvision ResNet state dict (used instead of `pretrained`)
    # imagenet: torchvision's ImageNet weights from torch's cache (models/pretrained.py; never downloaded at
    # run time); none: random initialisation. The default keeps the identity of runs made before the option.
    pretrained: str = "none"
    aspp_channels: int = 256
    aspp_rates: tuple[int, int, int] = (12, 24, 36)  # at output stride 8; halved at 16
    aspp_projection: bool = False  # the paper concatenates to 1280 channels without projection
    head_channels: int = 256
    head_kernel: int = 3  # 3: 3x3 conv first (Sec. 4); 1: the 1x1 variant of Appendix A
    # models.ARCHITECTURES: deeplabv3 (the paper's network), segnet-mtan, segnet-split, deeplabv3plus-hps (the
    # 2-task Cityscapes protocols, docs/protocols.md)
    arch: str = "deeplabv3"
    segnet_channels: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)  # SegNet stage widths (MTAN's)


@dataclass
class MethodConfig:
    """How the tasks are combined: the selected method (losses.METHODS) and each method's options."""

    name: str = "uncertainty"
    lr_mult: float = 1.0  # learning-rate multiplier of the method's own parameters (e.g. log-variances)
    options: dict[str, object] = field(default_factory=dict)  # method name -> its options dataclass

    @property
    def selected(self):
        """The selected method's options (its defaults when none were given)."""
        return self.options.get(self.name) or method_class(self.name).Options()

    def to_dict(self) -> dict:
        return {"name": self.name, "lr_mult": self.lr_mult, self.name: dataclasses.asdict(self.selected)}


@dataclass
class OptimConfig:
    """The paper's optimiser (Appendix A), iteration based."""

    iterations: int = 50_000
    batch_size: int = 8  # global batch; split over the processes of a DDP run
    lr: float = 2.5e-3  # Figure 2's caption says 0.01; we keep 2.5e-3 so sweep and Table 1 compare
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4  # not applied to norms, biases or log-variances
    poly_power: float = 0.9
    grad_clip: float | None = None
    # sgd: the paper's (Nesterov momentum); adam: torch.optim.Adam with the same lr, schedule and parameter
    # groups (L2 decay on conv weights only). Adam is nearly invariant to a loss's scale, so an Adam row
    # separates balancing from step size (docs/comparisons.md). The default keeps the identity of runs made
    # before the option.
    optimizer: str = "sgd"
    impl: str = "auto"  # SGD implementation: auto (torch's choice) | foreach | fused | loop (one tensor at a time)
    schedule: str = "poly"  # poly (poly_power) | step: lr x step_gamma every step_every iterations (StepLR)
    step_every: int = 0
    step_gamma: float = 0.5


@dataclass
class Config:
    """One experiment. `tasks` lists the trained tasks; the others are absent from the model."""

    name: str = "default"
    run_dir: str | None = None  # None: runs/<name>/<identity>, one directory per experiment
    tasks: tuple[str, ...] = TASKS
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    deterministic: bool = False
    channels_last: bool = False  # NHWC activations and weights (tensor-core friendly on GPU; see bench/train.py)
    sync_bn: bool = False
    # torch.compile of the network (after the DDP wrap): none (eager) | default | reduce-overhead (CUDA graphs on
    # GPU) | max-autotune. Checkpoints hold the uncompiled module's state dict either way.
    compile: str = "none"
    # step: the losses are copied to the host and checked for NaN/inf every step (a host synchronisation);
    # log: they stay on the device and are checked together at each log point and before every checkpoint or
    # validation (the error still names the task and the step; a non-finite step never reaches a checkpoint).
    check_finite: str = "step"
    log_every: int = 20
    val_every: int = 0  # 0: validate only at the end
    ckpt_every: int = 500
    eval_batch_size: int = 8
    wandb: str = "disabled"  # disabled | offline | online
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        try:
            self.tasks = check_tasks(self.tasks)
        except ValueError as e:
            raise ConfigError(f"tasks: {e}") from e

    @property
    def resolved_run_dir(self) -> Path:
        """`run_dir`, else runs/<name>/<identity>: two experiments (e.g. two seeds) never share a default."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name / self.identity()

    @property
    def data_root(self) -> str:
        """`data.root`, else $CITYSCAPES_DATASET; a ConfigError when neither is set."""
        root = root_setting(self.data.root)
        if not root:
            raise ConfigError("no dataset root: set data.root=PATH or $CITYSCAPES_DATASET "
                              "(e.g. datasets/synthetic-cityscapes made by `python -m data.synthetic`)")
        return root

    def autocast_dtype(self, device_type: str):
        """The autocast dtype for `amp` on this device: "auto" is bf16 on GPU and off on CPU
        (CPU autocast is slower than float32 there). None means full precision."""
        import torch

        if self.amp == "auto":
            return torch.bfloat16 if device_type == "cuda" else None
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[self.amp]

    def to_dict(self) -> dict:
        """Plain nested dict (the method section holds only the selected method's options)."""
        d = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, MethodConfig):
                value = value.to_dict()
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            d[f.name] = value
        return _plain(d)

    def identity(self, seed: bool = True) -> str:
        """Short hash naming the experiment: the values that change the trained weights and differ from
        the defaults, plus IDENTITY_SCHEMA. `seed=False` leaves the seed out (all seeds of one row)."""
        values, defaults = _leaves(self), _leaves(Config())
        selected = Config()
        selected.method.name = self.method.name  # its options' defaults (method.name keeps the true default)
        defaults |= {k: v for k, v in _leaves(selected).items() if k.startswith(f"method.{self.method.name}.")}
        diff = {k: v for k, v in values.items() if k not in NOT_IDENTITY and defaults.get(k, _ABSENT) != v}
        if not seed:
            diff.pop("seed", None)
        blob = json.dumps({"schema": IDENTITY_SCHEMA, "values": diff}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def differences(self, other: Config) -> list[str]:
        """Dotted keys whose values differ between the two configs (identity fields only)."""
        a, b = _leaves(self), _leaves(other)
        keys = (a.keys() | b.keys()) - NOT_IDENTITY
        return sorted(k for k in keys if a.get(k, _ABSENT) != b.get(k, _ABSENT))


_ABSENT = object()


def _plain(obj):
    """Tuples -> lists so config.yaml, JSON and the identity read back the same everywhere."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _leaves(cfg: Config) -> dict:
    """{dotted key: plain value} of every field; of the method options only the selected method's;
    mappings (fixed weights) are single values."""
    out = {}

    def walk(prefix: str, node) -> None:
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(node, MethodConfig) and f.name == "options":
                walk(f"{prefix}{node.name}.", node.selected)
            elif dataclasses.is_dataclass(value):
                walk(f"{prefix}{f.name}.", value)
            else:
                out[prefix + f.name] = _plain(value)

    walk("", cfg)
    return out


class ConfigError(ValueError):
    """A config file or override names an unknown key or a value of the wrong type."""


class _Loader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error (not "the last one wins"),
    numbers are read as YAML 1.2 reads them: `1e-3` is a float (YAML 1.1 wants `1.0e-3`), and aliases
    (`*name`) are refused: a few lines of nested aliases expand to billions of nodes (an "alias bomb")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed "
                              "in configs; write the value out")
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConfigError(f"key {key!r} given twice in one mapping (line {seen[key] + 1} and line "
                              f"{key_node.start_mark.line + 1}); keep one")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


@functools.lru_cache(maxsize=4096)
def _parse_yaml(text: str) -> object:
    return yaml.load(text, Loader=_Loader)


def load_yaml(text: str, where: str = "") -> object:
    """Parse YAML text with the project's rules (see _Loader); errors are ConfigErrors naming `where`.
    Each distinct text is parsed once (planning a preset loads the same files and overrides thousands
    of times); the caller gets its own copy."""
    try:
        return copy.deepcopy(_parse_yaml(text))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{where + ': ' if where else ''}not valid YAML ({e})") from e


@functools.cache
def _type_hints(cls: type) -> dict:
    """typing.get_type_hints of a config dataclass (resolving the string annotations is slow)."""
    return typing.get_type_hints(cls)


@dataclass(frozen=True)
class _Override:
    """A command-line value: the raw text (for string fields: `amp=off` stays "off", not YAML's
    False) and its YAML reading (for everything else)."""

    raw: str
    parsed: object


def _coerce(value, tp, where: str):
    """Check `value` against the annotation `tp` and convert lists to tuples where needed."""
    if isinstance(value, _Override):
        is_union = typing.get_origin(tp) in (typing.Union, types.UnionType)
        is_str = tp is str or (is_union and str in typing.get_args(tp))
        value = value.raw if is_str and value.parsed is not None else value.parsed
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message is the most useful
            return _coerce(value, options[0], where)
        for arg in options:
            with contextlib.suppress(ConfigError):
                return _coerce(value, arg, where)
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list for {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin is dict:
        key_t, val_t = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_coerce(k, key_t, where): _coerce(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            hint = " (in YAML, quote on/off/yes/no: 'off')" if isinstance(value, bool) else ""
            raise ConfigError(f"{where}: expected a string, got {value!r}{hint}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _apply(obj, updates: dict, prefix: str = "", merge: bool = False) -> None:
    """Set the fields of dataclass `obj` from the nested dict `updates`, checking keys and types.

    A mapping-valued field (method.fixed.weights) is replaced by a YAML file's mapping but updated
    key by key with `merge` (dotted command-line overrides).
    """
    if isinstance(obj, MethodConfig):
        return _apply_method(obj, updates, prefix, merge)
    hints = _type_hints(type(obj))
    valid = [f.name for f in dataclasses.fields(obj)]
    for key, value in updates.items():
        where = f"{prefix}{key}"
        if key not in valid:
            raise ConfigError(f"unknown config key '{where}'; valid keys here: {', '.join(prefix + v for v in valid)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of sub-keys, got {value!r}")
            _apply(current, value, where + ".", merge)
        elif merge and isinstance(current, dict) and isinstance(value, dict):
            setattr(obj, key, {**current, **_coerce(value, hints[key], where)})
        else:
            setattr(obj, key, _coerce(value, hints[key], where))


def _apply_method(obj: MethodConfig, updates: dict, prefix: str, merge: bool) -> None:
    """`method.name`, `method.lr_mult`, and `method.<registered name>.<option>` into that method's options."""
    for key, value in updates.items():
        where = f"{prefix}{key}"
        if key in ("name", "lr_mult"):
            setattr(obj, key, _coerce(value, str if key == "name" else float, where))
        elif key in METHODS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of {key}'s options, got {value!r}")
            options = obj.options.get(key) or method_class(key).Options()
            _apply(options, value, where + ".", merge)
            obj.options[key] = options
        else:
            raise ConfigError(f"unknown config key '{where}'; valid keys here: {prefix}name, {prefix}lr_mult and "
                              f"one section per method: {', '.join(prefix + m for m in METHODS)}")


def _nest(dotted: str, value) -> dict:
    out: dict = {}
    node = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def parse_override(text: str) -> dict:
    """`a.b=1` -> {"a": {"b": 1}}; the value is read as YAML (numbers, lists, null, booleans)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    value = load_yaml(raw, f"override {text!r}") if raw != "" else ""
    return _nest(key.strip(), _Override(raw, value))


def overrides_from_mapping(updates: dict, node=None, prefix: str = "") -> list[str]:
    """`key=value` command-line overrides that apply the nested mapping `updates` (as a YAML file would:
    a mapping-valued field is replaced whole). Used to turn a manifest row into a train.py command."""
    node = Config() if node is None else node
    out = []
    for key, value in updates.items():
        if isinstance(node, MethodConfig) and key in METHODS:
            sub = method_class(key).Options()
        else:
            sub = getattr(node, key, None) if dataclasses.is_dataclass(node) else None
        if isinstance(value, dict) and dataclasses.is_dataclass(sub):
            out += overrides_from_mapping(value, sub, f"{prefix}{key}.")
        else:
            text = value if isinstance(value, str) else \
                yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
            out.append(f"{prefix}{key}={text.removesuffix(chr(10)).removesuffix(chr(10) + '...')}")
    return out


def load_config(files=(), overrides=()) -> Config:
    """Build a Config from YAML files (applied in order) and then `key=value` overrides."""
    cfg = Config()
    names = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:  # e.g. a binary file or a checkpoint given by mistake
            raise ConfigError(f"{path}: cannot read it as a YAML config ({e})") from e
        data = load_yaml(text, str(path)) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            _apply(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        if "name" not in data:
            names.append(path.stem)
        else:
            names = [cfg.name]
    if names:
        cfg.name = "-".join(names)
    for text in overrides:
        _apply(cfg, parse_override(text), merge=True)
    cfg.__post_init__()
    _validate(cfg)
    return cfg


def config_from_dict(d: dict) -> Config:
    """Rebuild a Config saved with `Config.to_dict()` (e.g. from a checkpoint or a run record)."""
    cfg = Config()
    if not isinstance(d, dict):
        raise ConfigError(f"a saved config must be a mapping, got {type(d).__name__}")
    _apply(cfg, upgrade_config_dict(d))
    cfg.__post_init__()
    _validate(cfg)
    return cfg


def upgrade_config_dict(d: dict) -> dict:
    """A saved config in today's layout. Configs saved before methods had their own options (a flat
    `weighting` section: name, weights, form, init_log_var, lr_mult) become `method` sections."""
    if "weighting" not in d:
        return d
    d = dict(d)
    old = dict(d.pop("weighting"))
    name = old.pop("name", "uncertainty")
    lr_mult = old.pop("lr_mult", 1.0)
    fields = {f.name for f in dataclasses.fields(method_class(name).Options)}
    d["method"] = {"name": name, "lr_mult": lr_mult, name: {k: v for k, v in old.items() if k in fields}}
    return d


def build_method(cfg: Config):
    """`cfg.method.name` built for `cfg.tasks` with its options (a losses.Method); errors are ConfigErrors."""
    try:
        return build_weighting(cfg.method.name, {t: TASK_KINDS[t] for t in cfg.tasks},
                               **dataclasses.asdict(cfg.method.selected))
    except ValueError as e:
        raise ConfigError(f"method {cfg.method.name!r}: {e}") from e


def name_problem(name: str) -> str | None:
    """Why `name` (a config's or a preset's) cannot name a folder under runs/ or results/, or None."""
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
        return "must be a plain name (no path separators, not starting with '.'), since runs/NAME and " \
               "results/NAME are folders named by it"
    return None


def _validate(cfg: Config) -> None:
    """Value checks that the types alone do not catch."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(cfg.model.output_stride in (8, 16), f"model.output_stride must be 8 or 16, got {cfg.model.output_stride}")
    need(cfg.model.head_kernel in (1, 3), f"model.head_kernel must be 1 or 3, got {cfg.model.head_kernel}")
    need(cfg.model.pretrained in ("imagenet", "none"),
         f"model.pretrained must be imagenet or none, got {cfg.model.pretrained!r}")
    need(cfg.model.aspp_channels > 0 and cfg.model.head_channels > 0,
         f"model.aspp_channels and model.head_channels must be positive, got {cfg.model.aspp_channels} and "
         f"{cfg.model.head_channels}")
    need(all(r > 0 for r in cfg.model.aspp_rates), f"model.aspp_rates must be positive, got {cfg.model.aspp_rates}")
    o = cfg.optim
    need(o.iterations > 0, f"optim.iterations must be positive, got {o.iterations}")
    need(o.batch_size > 0, f"optim.batch_size must be positive, got {o.batch_size}")
    need(math.isfinite(o.lr) and o.lr > 0, f"optim.lr must be positive and finite, got {o.lr}")
    need(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    need(not o.nesterov or o.momentum > 0, "optim.nesterov needs optim.momentum > 0")
    need(math.isfinite(o.weight_decay) and o.weight_decay >= 0,
         f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(math.isfinite(o.poly_power) and o.poly_power >= 0, f"optim.poly_power must be >= 0, got {o.poly_power}")
    need(o.grad_clip is None or (math.isfinite(o.grad_clip) and o.grad_clip > 0),
         f"optim.grad_clip must be positive (or null for none), got {o.grad_clip}")
    for key in ("log_every", "ckpt_every", "eval_batch_size"):
        need(getattr(cfg, key) >= 1, f"{key} must be at least 1, got {getattr(cfg, key)}")
    need(cfg.val_every >= 0, f"val_every must be >= 0 (0: validate only at the end), got {cfg.val_every}")
    need(name_problem(cfg.name) is None, f"name {cfg.name!r} {name_problem(cfg.name)}")
    need(0 <= cfg.seed < 2**63, f"seed must be in [0, 2**63), got {cfg.seed}")
    from models.resnet import BACKBONES  # here, not at the top: importing the config loads no torch model code

    need(cfg.model.backbone in BACKBONES,
         f"model.backbone must be one of {', '.join(sorted(BACKBONES))}, got {cfg.model.backbone!r}")
    for key in ("train_frames", "val_frames"):
        v = getattr(cfg.data, key)
        need(v is None or v >= 1, f"data.{key} must be at least 1 (or null for all frames), got {v}")
    need(cfg.data.synthetic_profile is None or cfg.data.synthetic_profile in PROFILES,
         f"data.synthetic_profile must be null or one of {', '.join(PROFILES)}, got {cfg.data.synthetic_profile!r}")
    need(cfg.data.num_workers >= 0, f"data.num_workers must be >= 0, got {cfg.data.num_workers}")
    need(not (cfg.sync_bn and cfg.device == "cpu"),
         "sync_bn needs CUDA (SyncBatchNorm does not run on the CPU or with gloo); set sync_bn=false")
    need(o.optimizer in ("sgd", "adam"), f"optim.optimizer must be sgd or adam, got {o.optimizer!r}")
    need(cfg.amp in ("auto", "bf16", "fp16", "off"), f"amp must be auto, bf16, fp16 or off, got {cfg.amp!r}")
    need(cfg.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {cfg.device!r}")
    need(cfg.wandb in ("disabled", "offline", "online"),
         f"wandb must be disabled, offline or online, got {cfg.wandb!r}")
    need(cfg.compile in ("none", "default", "reduce-overhead", "max-autotune"),
         f"compile must be none, default, reduce-overhead or max-autotune, got {cfg.compile!r}")
    need(cfg.check_finite in ("step", "log"), f"check_finite must be step or log, got {cfg.check_finite!r}")
    d = cfg.data
    need(not d.resident or (d.size is not None and d.crop is None and d.scale is None and not d.jitter),
         "data.resident keeps one fixed-size copy of each frame on the device and draws only flips there: it needs "
         f"data.size set and no data.crop, data.scale or data.jitter (got size={d.size}, crop={d.crop}, "
         f"scale={d.scale}, jitter={d.jitter})")
    _validate_protocol(cfg, need)
    need(cfg.optim.impl in ("auto", "foreach", "fused", "loop"),
         f"optim.impl must be auto, foreach, fused or loop, got {cfg.optim.impl!r}")
    need(cfg.method.lr_mult >= 0, f"method.lr_mult must be >= 0, got {cfg.method.lr_mult}")
    for name, options in list(cfg.method.options.items()):  # re-run each options class's own checks
        try:
            cfg.method.options[name] = dataclasses.replace(options)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"method.{name}: {e}") from e
    build_method(cfg)  # the selected method's checks against the trained tasks (e.g. a weight for an untrained task)
    if cfg.data.scale is not None:
        lo, hi = cfg.data.scale
        need(0 < lo <= hi, f"data.scale must be 0 < low <= high, got {cfg.data.scale}")
    for key in ("size", "crop"):
        v = getattr(cfg.data, key)
        need(v is None or (v[0] > 0 and v[1] > 0), f"data.{key} must be positive, got {v}")
        # The encoder divides each side by the output stride; with fewer than 2 features per side the
        # pooled BatchNorm and the heads produce NaN or nonsense.
        need(v is None or min(v) >= 2 * cfg.model.output_stride,
             f"data.{key} must be at least {2 * cfg.model.output_stride} pixels on each side (twice "
             f"model.output_stride={cfg.model.output_stride}), got {list(v) if v else v}")


def _validate_protocol(cfg: Config, need) -> None:
    """Checks of the 2-task protocols' options (data.format, model.arch, optim.optimizer / schedule)."""
    from models import ARCHITECTURES

    d, o = cfg.data, cfg.optim
    need(d.format in ("cityscapes", "npy"), f"data.format must be cityscapes or npy, got {d.format!r}")
    need(d.format != "npy" or not (d.resident or d.crop or d.scale or d.jitter or d.cache not in ("auto", "off")),
         "data.format=npy reads the npy files at their own size with the papers' augmentation: data.resident, crop, "
         "scale, jitter and a cache directory do not apply")
    from tasks import PROTOCOL_TASK_SPECS

    wrong = [t for t in cfg.tasks if (t in PROTOCOL_TASK_SPECS) != (d.format == "npy")]
    need(not wrong, f"tasks {wrong} do not fit data.format={d.format}: the npy layout has the tasks "
         f"{', '.join(PROTOCOL_TASK_SPECS)}, the official layout the others")
    need(cfg.model.arch in ARCHITECTURES, f"model.arch must be one of {', '.join(ARCHITECTURES)}, got "
         f"{cfg.model.arch!r}")
    need(all(c > 0 for c in cfg.model.segnet_channels), f"model.segnet_channels must be positive, got "
         f"{cfg.model.segnet_channels}")
    need(not (cfg.model.arch == "segnet-mtan" and getattr(cfg.method.selected, "space", None) == "features"),
         "model.arch=segnet-mtan has no single shared feature map: set the method's space: parameters")
    need(o.optimizer in ("sgd", "adam"), f"optim.optimizer must be sgd or adam, got {o.optimizer!r}")
    need(o.schedule in ("poly", "step"), f"optim.schedule must be poly or step, got {o.schedule!r}")
    need(o.schedule != "step" or o.step_every > 0, f"optim.schedule=step needs optim.step_every > 0, got "
         f"{o.step_every}")
    need(0 < o.step_gamma <= 1, f"optim.step_gamma must be in (0, 1], got {o.step_gamma}")
