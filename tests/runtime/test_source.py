"""Source locations of runtime findings point at the user's class and ``forward``, also when
``forward`` is decorated (Hugging Face wraps it; the wrapper's code lives in the library)."""

from __future__ import annotations

import importlib.util
import inspect
import sys

import torch
from torch import nn

import torch_audit
from torch_audit.runtime.source import attribute_use_line, class_location

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
