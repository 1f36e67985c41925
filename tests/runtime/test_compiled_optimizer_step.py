"""A compiled optimizer step (`torch.compile(opt.step)`, a documented PyTorch recipe) under a
session: the session's step hooks run eagerly instead of being traced, so Dynamo prints no
warning that a plain run would not, and the steps are still seen. Making them so must not
import Dynamo into a script that never compiles anything (over a second of start-up)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import torch_audit


def _fit(steps: int = 3) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)

    @torch.compile(backend="eager")  # no C++ compiler needed: Dynamo's tracing is the point
    def step():
        opt.step()

    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
        step()


def test_compiled_optimizer_step_gets_no_dynamo_warning_from_the_session():
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch_audit.audit(config=False) as session:
            _fit()
    ours = [w for w in caught if "Dynamo" in str(w.message) or "trace" in str(w.message)]
    assert ours == [], [str(w.message)[:200] for w in ours]
    assert session.optimizer_steps == 3 and session.findings == []


def test_a_session_does_not_import_dynamo_into_a_script_that_does_not():
    # a fresh interpreter: this test process has imported Dynamo already
    script = textwrap.dedent("""
        import sys
        import torch
        import torch_audit
        from torch import nn

        with torch_audit.audit(config=False) as session:
            model = nn.Linear(3, 1)
            for _ in range(2):
                model.zero_grad()
                model(torch.randn(4, 3)).sum().backward()
        assert session.findings == []
        print("dynamo" if "torch._dynamo" in sys.modules else "no dynamo")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "no dynamo"


def test_a_compiled_model_gets_no_dynamo_warning_from_the_module_hooks():
    # the module hooks asked for the thread id before asking whether Dynamo was tracing them
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch_audit.audit(config=False):
            for _ in range(2):
                opt.zero_grad()
                F.cross_entropy(compiled(torch.randn(4, 8)), torch.randint(0, 3, (4,))).backward()
                opt.step()
    untraceable = [str(w.message)[:120] for w in caught if "does not know how to trace" in str(w.message)]
    assert untraceable == []
