"""The layer facts (auditor/lint/facts/layers.py) on their own."""

from __future__ import annotations

import textwrap

import libcst as cst

from torch_audit.lint.context import FileContext
from torch_audit.lint.facts.layers import (
    is_layer_name,
    is_real_module,
    is_stateless_layer,
    output_width,
    self_attribute,
    shape_preserving_dataflow,
)
from torch_audit.lint.traverse import dispatch_table, walk


def context(src: str) -> FileContext:
    src = textwrap.dedent(src)
    module = cst.parse_module(src)
    ctx = FileContext("t.py", src, module)
    walk(module, [dispatch_table([ctx.indexer], "visit_"), dispatch_table([ctx.indexer], "leave_")], ctx.stack)
    return ctx


def function(ctx: FileContext, name: str):
    return next(s for s in ctx.module_scope.walk() if s.kind == "function" and s.name == name)


def test_layer_names():
    assert is_layer_name("torch.nn.Linear")
    assert is_layer_name("torch.nn.parallel.DistributedDataParallel")
    assert not is_layer_name("torch.nn.Parameter")
    assert not is_layer_name("torch.nn.functional.relu")
    assert not is_layer_name("torch.nn.init.zeros_")
    assert not is_layer_name(None)
    assert is_stateless_layer("torch.nn.ReLU") and is_stateless_layer("torch.nn.MaxPool2d")
    assert not is_stateless_layer("torch.nn.ReLU7")
    assert not is_stateless_layer("torch.nn.Linear") and not is_stateless_layer("torch.nn.Dropout")


def test_output_width_only_for_literals():
    call = cst.parse_expression("nn.Linear(64, 1)")
    assert output_width(call, "torch.nn.Linear") == 1
    assert output_width(cst.parse_expression("nn.Linear(64, out_features=3)"), "torch.nn.Linear") == 3
    assert output_width(cst.parse_expression("nn.Linear(64, n)"), "torch.nn.Linear") is None
    assert output_width(cst.parse_expression("nn.Conv2d(8, 1, 3)"), "torch.nn.Conv2d") == 1
    assert output_width(cst.parse_expression("nn.LazyLinear(1)"), "torch.nn.LazyLinear") == 1


def test_real_modules():
    ctx = context(
        """
        import torch.nn as nn
        from torch.nn import Parameter

        class A(nn.Module): pass
        class B(A): pass
        class P(Parameter): pass
        class Q(P): pass
        class S(nn.Sequential): pass
        """
    )
    classes = ctx.modules.classes
    assert is_real_module(ctx, classes["A"]) and is_real_module(ctx, classes["B"])
    assert is_real_module(ctx, classes["S"])
    assert not is_real_module(ctx, classes["P"]) and not is_real_module(ctx, classes["Q"])


def test_self_attribute():
    ctx = context(
        """
        class Net:
            def forward(me, x):
                return me.fc(x), other.fc(x)
        """
    )
    fwd = function(ctx, "forward")
    first, second = [c.node.func for c in fwd.calls]
    assert self_attribute(first, fwd) == "fc"
    assert self_attribute(second, fwd) is None


def test_shape_preserving_provenance_stops_at_reshapes():
    ctx = context(
        """
        import torch.nn as nn

        def f(x, n):
            head = nn.Linear(8, 1)
            a = head(x).float().detach()
            b = head(x).view(-1, n)
            c = head(x).squeeze(-1)
            d = head(x)[:, 0]
            return a, b, c, d
        """
    )
    fn = function(ctx, "f")
    df = shape_preserving_dataflow(ctx)
    stmt, _ = fn.returns[0]
    kinds = {}
    for name in "abcd":
        kinds[name] = [(s.kind, s.qualname) for s in df.sources(cst.Name(name), fn, stmt.index)]
    assert kinds["a"] == [("module", "torch.nn.Linear")]
    assert kinds["b"] == kinds["c"] == kinds["d"] == [("unknown", None)]
    # the ordinary provenance goes through them
    assert [s.kind for s in ctx.dataflow.sources(cst.Name("b"), fn, stmt.index)] == ["module"]
