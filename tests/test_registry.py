"""The method registry: a method is one file (@register, auto-imported), its contract is checked when the
class is defined, and the listing keeps its order."""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from losses import METHODS, method_lines
from losses.base import GradientMethod, LossMethod, NoOptions

ROOT = Path(__file__).resolve().parents[1]

NEW_METHOD = '''
"""Half of every task loss (a scratch method)."""

from dataclasses import dataclass

from losses.base import LossMethod, Weighting
from losses.registry import register


@dataclass
class HalfOptions:
    factor: float = 0.5


@register("half")
class Half(LossMethod):
    Options = HalfOptions

    def weigh(self, losses, ctx):
        return Weighting({t: self.options.factor for t in self.tasks})
'''


def test_a_new_method_is_one_new_file(tmp_path):
    """A copy of the package plus one file: the method is registered, listed (after the loss-space methods
    that give an order, before the gradient-space ones) and buildable, with no other file edited."""
    shutil.copytree(ROOT / "losses", tmp_path / "losses", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "losses" / "half.py").write_text(NEW_METHOD)
    code = textwrap.dedent("""
        import torch, losses
        print(losses.__file__)
        print(list(losses.METHODS))
        m = losses.build_method("half", {"depth": "regression"})
        total, logs = m({"depth": torch.tensor(4.0)}, losses.StepContext.of({"depth": 4.0}))
        print(float(total), float(logs["weight/depth"]))
    """)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    where, names, values = out.stdout.splitlines()
    assert Path(where).parent == tmp_path / "losses"
    names = eval(names)
    assert names.index("half") == names.index("stch") + 1 == names.index("gradient-mean") - 1
    assert values == "2.0 0.5"


def _import_file(path: Path):
    spec = importlib.util.spec_from_file_location("scratch_method", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_wrong_options_type_fails_at_import_with_the_methods_name(tmp_path):
    path = tmp_path / "bad_method.py"
    path.write_text(textwrap.dedent('''
        from dataclasses import dataclass

        from losses.base import GradientMethod
        from losses.registry import register


        @dataclass
        class SharpOptions:  # should subclass GradientOptions (the `space` option)
            beta: float = 1.0


        @register("sharp")
        class SharpGradient(GradientMethod):
            Options = SharpOptions
    '''))
    with pytest.raises(TypeError, match=r"SharpGradient .*must subclass GradientOptions, got SharpOptions"):
        _import_file(path)
    assert "sharp" not in METHODS


@pytest.mark.parametrize("body, error", [
    ("Options = dict", "Options must be a dataclass"),
    ("Options = NoOptions\n    kind = 'jacobian'", "kind must be one of"),
    ("Options = NeedsValue", "option 'alpha' has no default"),
])
def test_the_contract_is_checked_when_the_class_is_defined(body, error):
    from dataclasses import dataclass

    @dataclass
    class NeedsValue:
        alpha: float

    namespace = {"LossMethod": LossMethod, "NoOptions": NoOptions, "NeedsValue": NeedsValue}
    with pytest.raises(TypeError, match=f"Broken .*{error}"):
        exec(f"class Broken(LossMethod):\n    {body}\n", namespace)


@pytest.mark.parametrize("base, body, error", [
    ("LossMethod", "def forward(self, losses, ctx):\n        return 0, {}", "forward belongs to the base class"),
    ("LossMethod", "def weigh(self, losses, ctx=None):\n        pass", "no default for ctx"),
    ("LossMethod", "def weigh(self, losses, ctx) -> tuple:\n        pass", "must return Weighting, annotated tuple"),
    ("GradientMethod", "def logs(self):\n        return {}", "logs belongs to the base class, define method_logs"),
    ("GradientMethod", "def aggregate(self, J):\n        return J.sum(0)", "no default for ctx"),
])
def test_the_call_contract_is_checked_when_the_class_is_defined(base, body, error):
    """The base class composes the total and writes weight/<task>; the step always passes a StepContext."""
    namespace = {"LossMethod": LossMethod, "GradientMethod": GradientMethod}
    with pytest.raises(TypeError, match=f"Broken .*{error}"):
        exec(f"class Broken({base}):\n    {body}\n", namespace)


def test_weigh_must_be_defined_and_return_a_weighting_without_its_own_weight_logs():
    import torch

    from losses.base import StepContext, Weighting
    from losses.registry import register

    class Abstract(LossMethod):
        pass

    with pytest.raises(TypeError, match="Abstract .*does not define weigh"):
        register("abstract")(Abstract)
    assert "abstract" not in METHODS

    class Old(LossMethod):  # the former contract: (total, logs)
        def weigh(self, losses, ctx):
            return sum(losses.values()), {}

    class Short(LossMethod):
        def weigh(self, losses, ctx):
            return Weighting(torch.ones(1))

    class Twice(LossMethod):
        def weigh(self, losses, ctx):
            return Weighting({t: 1.0 for t in self.tasks}, logs={"weight/depth": 1.0})

    tasks = {"semantic": "classification", "depth": "regression"}
    losses = {t: torch.tensor(1.0) for t in tasks}
    for cls, error in [(Old, "Old.weigh must return a Weighting, got tuple"), (Short, "returned 1 weights for"),
                       (Twice, r"Twice logs \['weight/depth'\] itself")]:
        with pytest.raises((TypeError, ValueError), match=error):
            cls(tasks)(losses, StepContext.of(losses))


def test_register_refuses_a_taken_or_malformed_name():
    from losses.registry import register

    class Other(GradientMethod):
        pass

    with pytest.raises(ValueError, match="'pcgrad' is registered twice"):
        register("pcgrad")(Other)
    with pytest.raises(ValueError, match="lower case"):
        register("Other_Name")(Other)
    with pytest.raises(ValueError, match="lower case"):
        register("lr_mult")(Other)
    assert "Other_Name" not in METHODS


def test_the_listing_order_is_loss_space_first_then_by_order():
    names = list(METHODS)
    assert names[:3] == ["fixed", "uncertainty", "dwa"] and names[-1] == "cr-mogm"
    kinds = [METHODS[n].kind for n in names]
    assert kinds == sorted(kinds, key=("loss", "gradient").index)
    assert [line.split()[0] for line in method_lines()] == names


def test_the_extending_guide_examples_register_and_compute_what_they_say():
    """docs/extending.md's two methods, as printed: each registers from its own code, loads from a config,
    and computes its formula; the loss-space one returns only its weights (a Weighting), the base class
    composes the total and logs weight/<task>, and its state is the first step's process-averaged losses."""
    import re

    import torch

    from engine.config import build_method, load_config
    from losses.base import StepContext, Weighting

    text = (ROOT / "docs" / "extending.md").read_text()
    blocks = dict(re.findall(r"```python\n# (losses/\w+\.py)\n(.*?)```", text, re.S))
    assert set(blocks) == {"losses/initial_ratio.py", "losses/unit_sum.py"}
    assert 20 <= len(blocks["losses/initial_ratio.py"].splitlines()) <= 30
    try:
        for name, code in blocks.items():
            exec(compile(code, name, "exec"), {"__name__": name})
        assert {"initial-ratio", "unit-sum"} <= set(METHODS)
        m = build_method(load_config([], ["method.name=initial-ratio", "method.initial-ratio.eps=1e-6"]))
        losses = {t: torch.tensor(v, requires_grad=True) for t, v in zip(m.tasks, (2.0, 4.0, 0.5))}
        total, logs = m(losses, StepContext.of(losses))  # ctx.losses: detached, as the step passes them
        assert float(total.detach()) == pytest.approx(3.0) and float(logs["weight/depth"]) == pytest.approx(2.0)
        assert list(logs) == [f"weight/{t}" for t in m.tasks]
        total.backward()
        assert [float(v.grad) for v in losses.values()] == pytest.approx([0.5, 0.25, 2.0])  # d total / d L_k
        later = {t: torch.tensor(1.0) for t in m.tasks}  # L_k(0) is kept: the weights do not follow the losses
        out = m.weigh(later, StepContext.of(later, step=1))
        assert isinstance(out, Weighting) and out.weights.tolist() == pytest.approx([0.5, 0.25, 2.0])
        assert float(m(later, StepContext.of(later, step=1))[0]) == pytest.approx(2.75)
        g = build_method(load_config([], ["method.name=unit-sum"]))
        J = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])  # norms 5, 1, 1: mean 7/3
        torch.testing.assert_close(g.aggregate(J, StepContext.of()), 7 / 3 * torch.tensor([0.6 + 1.0, 0.8 + 1.0]))
        assert float(g.logs()["weight/semantic"]) == pytest.approx(7 / 15)
    finally:
        for name in ("initial-ratio", "unit-sum"):
            METHODS.pop(name, None)
