"""Source locations of runtime findings point at the user's class and ``forward``, also when
``forward`` is decorated (Hugging Face wraps it; the wrapper's code lives in the library)."""

from __future__ import annotations

import importlib.util
import inspect
import sys

import torch
from torch import nn

import torch_audit
from torch_audit.runtime.source import attribute_use_line, class_location, display_path

DECORATOR = '''
import functools

def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper
'''


def _decorator_from_another_file(tmp_path):
    path = tmp_path / "library_utils.py"
    path.write_text(DECORATOR)
    spec = importlib.util.spec_from_file_location("library_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.logged


def test_a_decorated_forward_points_at_the_class_and_its_own_lines(tmp_path):
    logged = _decorator_from_another_file(tmp_path)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        @logged
        def forward(self, x):
            return self.fc(x) * float("nan")

    lines, first = inspect.getsourcelines(Net)
    path, line = class_location(Net())
    assert (path, line) == (__file__, first)
    use_path, use_line = attribute_use_line(Net, "fc")
    assert use_path == __file__
    assert "self.fc(x)" in lines[use_line - first]

    with torch_audit.audit(config=False, select=["nonfinite-activation"]) as session:
        net = Net()
        net(torch.randn(2, 4)).sum().backward()
    [finding] = session.findings
    assert finding.path.endswith("test_source.py") and "library_utils" not in finding.message


def test_library_lines_are_named_below_site_packages(tmp_path, monkeypatch):
    from torch_audit.runtime.source import short_path

    site = tmp_path / "lib" / "site-packages"
    (site / "lib_x").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    assert short_path(str(site / "lib_x" / "core.py")) == "lib_x/core.py"
    elsewhere = tmp_path / "other" / "core.py"
    assert short_path(str(elsewhere)) == str(elsewhere)


# -- issue 19 item 3: findings point at the user's line, not a model class in site-packages --

LIBRARY_MODEL = '''
import torch
from torch import nn


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.5)
        self.spare = nn.Linear(8, 8)  # never used in forward
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.drop(self.body(x)))
'''

USER_LOOP = '''
import torch
from fakelib.models import Backbone

torch.manual_seed(0)
model = Backbone()
model.body.bias.requires_grad_(False)
optimizer = torch.optim.SGD(
    model.parameters(), lr=0.01)
model.eval()
for step in range(3):
    x = torch.randn(16, 4)
    loss = model(x).pow(2).mean()
    loss.backward()
    optimizer.step()
'''

NONFINITE_LOOP = '''
import torch
from fakelib.models import Backbone

torch.manual_seed(0)
model = Backbone()
opt = torch.optim.SGD(model.parameters(), lr=0.01)


def train_step(x):
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()


train_step(torch.randn(2, 4))
train_step(torch.full((2, 4), float("nan")))
'''


def _line_of(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


def _user_and_library(tmp_path, monkeypatch, loop: str):
    lib = tmp_path / "venv" / "lib" / "site-packages" / "fakelib"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "models.py").write_text(LIBRARY_MODEL)
    monkeypatch.syspath_prepend(str(lib.parent))
    script = tmp_path / "train.py"
    script.write_text(loop)
    yield script
    for name in [n for n in sys.modules if n == "fakelib" or n.startswith("fakelib.")]:
        del sys.modules[name]


def test_step_findings_point_at_the_users_loop_and_optimizer(tmp_path, monkeypatch):
    import runpy

    for script in _user_and_library(tmp_path, monkeypatch, USER_LOOP):
        with torch_audit.audit(select=["gradients-not-cleared", "training-in-eval-mode",
                                       "frozen-param-in-optimizer", "unused-parameter"],
                               preview=True, config=False) as session:
            runpy.run_path(str(script))
        where = {f.name: (f.path, f.line) for f in session.findings}
        assert set(where) == {"gradients-not-cleared", "training-in-eval-mode",
                              "frozen-param-in-optimizer", "unused-parameter"}, where
        files = {p for p, _ in where.values()}
        assert all(p.endswith("train.py") for p in files), where  # none in site-packages
        step = _line_of(USER_LOOP, "optimizer.step()")
        built = _line_of(USER_LOOP, "optimizer = torch.optim.SGD(")
        assert where["gradients-not-cleared"][1] == step
        assert where["training-in-eval-mode"][1] == step
        assert where["frozen-param-in-optimizer"][1] == built
        assert where["unused-parameter"][1] == built


def test_nonfinite_findings_point_at_the_users_step_line(tmp_path, monkeypatch):
    import runpy

    for script in _user_and_library(tmp_path, monkeypatch, NONFINITE_LOOP):
        with torch_audit.audit(select=["nonfinite-gradient", "nonfinite-parameter"],
                               config=False) as session:
            runpy.run_path(str(script))
        where = {f.name: (f.path, f.line) for f in session.findings}
        assert "nonfinite-gradient" in where, where
        step = _line_of(NONFINITE_LOOP, "opt.step()")
        for name, (path, line) in where.items():
            assert path.endswith("train.py") and line == step, (name, path, line)


def test_a_model_class_the_user_wrote_is_still_named_for_unused_parameters():
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.unused = nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    model = Mine()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit(select=["unused-parameter"], preview=True, config=False) as session:
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(3, 2)).sum().backward()
            opt.step()
    [finding] = session.findings
    path, line = class_location(Mine)
    assert (finding.path, finding.line) == (display_path(path), line)
