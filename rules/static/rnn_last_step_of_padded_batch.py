import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import bool_argument, dotted
from torch_audit.rule import StaticRule

_PAD_PACKED = frozenset({"torch.nn.utils.rnn.pad_packed_sequence"})
_PAD = frozenset({"torch.nn.utils.rnn.pad_sequence"})
_RNNS = frozenset({"torch.nn.LSTM", "torch.nn.GRU", "torch.nn.RNN"})


class RnnLastStepOfPaddedBatch(StaticRule):
    """## What it does
    Finds the last time step taken by position (`out[:, -1]` with `batch_first=True`, `out[-1]`
    otherwise) from an RNN output that is padded: the result of `pad_packed_sequence`, or the
    output of an `nn.LSTM`/`nn.GRU`/`nn.RNN` run over a batch built with `pad_sequence`.

    ## Why is this bad?
    In a padded batch only the longest sequence ends at the last position. For every shorter
    sequence, `out[:, -1]` is a padding step: zeros after `pad_packed_sequence`, or the state
    after running over padding tokens. The model silently learns from the wrong features, and
    accuracy depends on how much padding each batch has.

    ## Known problems
    The final hidden state `h_n[-1]` (the last *layer*) is correct for packed input and is not
    reported. Gathering by lengths (`out[torch.arange(B), lengths - 1]`) is the fix and is not
    reported. The layout is read from the literal `batch_first` argument; a non-literal value
    is treated as unknown and not reported.

    ## References
    - [torch.nn.utils.rnn.pad_packed_sequence](https://pytorch.org/docs/stable/generated/torch.nn.utils.rnn.pad_packed_sequence.html)
    - [PyTorch forums: last output of a packed LSTM](https://discuss.pytorch.org/t/how-to-get-the-output-at-the-last-timestep-for-batched-sequences/12057)
    """

    code = "TA501"
    name = "rnn-last-step-of-padded-batch"
    severity = Severity.ERROR
    message = "`{expr}` takes the last position of a padded RNN output ({origin}): shorter sequences get a padding step"
    fix_title = "Gather each sequence's last valid step by its length (or use h_n[-1])"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._subs: list = []

    def visit_Subscript(self, node: cst.Subscript) -> None:
        dim = _last_step_dim(node)
        if dim is not None and isinstance(node.value, (cst.Name, cst.Attribute)) and self.ctx.statement is not None:
            self._subs.append((node, dim, self.ctx.scope, self.ctx.statement.index))

    def leave_Module(self, original_node: cst.Module) -> None:
        for node, dim, scope, at in self._subs:
            found = self._padded_layout(node.value, scope, at)
            if found is None:
                continue
            batch_first, origin = found
            if batch_first is None or (dim == 1) != batch_first:
                continue
            self.report(node, expr=self.ctx.code(node), origin=origin)

    def _padded_layout(self, value, scope, at):
        """(batch_first, description) when ``value`` is a padded RNN output, else None."""
        df = self.ctx.dataflow
        for source in df.sources(value, scope, at):
            if source.kind == "call" and source.qualname in _PAD_PACKED and isinstance(source.node, cst.Call):
                bf = bool_argument(source.node, 1, "batch_first")
                if bf is None and _argument_given(source.node, 1, "batch_first"):
                    return None
                return bool(bf), "pad_packed_sequence"
        if not isinstance(value, cst.Name):
            return None
        a = df.reaching(value.value, scope, at)
        if a is None or a.stmt is None or a.kind not in ("unpack", "assign") or not isinstance(a.value, cst.Call):
            return None
        if a.kind == "unpack" and a.element != 0:
            return None
        call = a.value
        if a.kind == "assign":
            return None  # `out = rnn(x)` is a tuple; out[:, -1] would fail loudly
        ctor = df.constructor_source(call.func, a.stmt.scope, a.index) if isinstance(call.func, (cst.Name, cst.Attribute)) else None
        if ctor is None or ctor.qualname not in _RNNS or not isinstance(ctor.node, cst.Call) or not call.args:
            return None
        if not any(
            s.kind == "call" and s.qualname in _PAD
            for s in df.sources(call.args[0].value, a.stmt.scope, a.index)
        ):
            return None
        bf = bool_argument(ctor.node, None, "batch_first")
        if bf is None and _argument_given(ctor.node, None, "batch_first"):
            return None
        name = dotted(call.func) or "the RNN"
        return bool(bf), f"{name} run over a pad_sequence batch"


def _argument_given(call: cst.Call, position, keyword) -> bool:
    from torch_audit.lint.api import argument

    return argument(call, position, keyword) is not None


def _is_minus_one(node: cst.BaseExpression) -> bool:
    return (
        isinstance(node, cst.UnaryOperation)
        and isinstance(node.operator, cst.Minus)
        and isinstance(node.expression, cst.Integer)
        and node.expression.value == "1"
    )


def _full_slice(el: cst.SubscriptElement) -> bool:
    s = el.slice
    return isinstance(s, cst.Slice) and s.lower is None and s.upper is None and s.step is None


def _last_step_dim(node: cst.Subscript) -> int | None:
    """1 for ``x[:, -1]``/``x[:, -1, :]``, 0 for ``x[-1]``/``x[-1, :, :]``, else None."""
    els = node.slice
    if not els:
        return None
    first = els[0].slice
    if isinstance(first, cst.Index) and _is_minus_one(first.value) and all(_full_slice(e) for e in els[1:]):
        return 0
    if (
        len(els) >= 2
        and _full_slice(els[0])
        and isinstance(els[1].slice, cst.Index)
        and _is_minus_one(els[1].slice.value)
        and all(_full_slice(e) for e in els[2:])
    ):
        return 1
    return None
