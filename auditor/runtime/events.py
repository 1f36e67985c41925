"""What subscribers receive: the event objects of ``backward()``, loss and ReLU calls, and the
:class:`StepContext` of one ``optimizer.step()``. Device quantities are computed lazily and
once per event, whoever asks first (``StepContext.grad_norms()`` is shared by every check and
by ``torch-audit run``'s charts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from torch_audit.runtime import dist, reduce
from torch_audit.runtime.source import user_site

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.runtime.session import AuditSession

__all__ = ["BackwardEvent", "CallEvent", "StepContext", "gradient_norms"]


class BackwardEvent:
    """``torch.autograd.backward`` / ``Tensor.backward`` was called on ``tensors``."""

    __slots__ = ("tensors", "_value", "_loss", "_site")

    def __init__(self, tensors: tuple[torch.Tensor, ...]) -> None:
        self.tensors = tensors
        self._value: torch.Tensor | None = None
        self._loss: torch.Tensor | None | bool = False
        self._site: tuple[str, int] | None | bool = False

    @property
    def value(self) -> torch.Tensor | None:
        """A detached 1-element float tensor: the loss (:attr:`loss`, in its own shape: one
        ``detach`` for the common ``loss.backward()``), or the sum of a non-scalar root."""
        if self._value is None:
            loss = self.loss
            if loss is not None:
                self._value = loss
                return loss
            vals = [t.detach() for t in self.tensors if t.is_floating_point()]
            if not vals:
                return None
            v = vals[0] if len(vals) == 1 and vals[0].numel() == 1 else torch.stack(
                [x.float().sum() for x in vals]
            ).sum()
            self._value = v.reshape(1)
        return self._value

    @property
    def loss(self) -> torch.Tensor | None:
        """The detached scalar ``backward()`` was called on, when it was one floating-point
        scalar (None otherwise): what a progress line or a loss chart shows."""
        if self._loss is False:
            self._loss = None
            if len(self.tensors) == 1:
                t = self.tensors[0]
                if t.is_floating_point() and t.numel() == 1:
                    self._loss = t.detach()
        return self._loss  # type: ignore[return-value]

    @property
    def site(self) -> tuple[str, int] | None:
        """``(path, line)`` of the user's code that called ``backward()``."""
        if self._site is False:
            self._site = user_site(2)
        return self._site  # type: ignore[return-value]


class CallEvent:
    """A loss call (``F.cross_entropy``/``F.nll_loss`` and their modules) or an ``nn.ReLU``
    output."""

    __slots__ = ("input", "target", "output", "kwargs", "module", "loss", "_site")

    def __init__(self, input: Any, target: Any = None, output: Any = None,
                 kwargs: dict | None = None, module: torch.nn.Module | None = None) -> None:
        #: for loss events: "cross_entropy" or "nll_loss" (which expects log-probabilities)
        self.loss = "cross_entropy"
        self.input = input
        self.target = target
        self.output = output
        self.kwargs = kwargs or {}
        self.module = module
        self._site: Any = False

    @property
    def site(self) -> tuple[str, int] | None:
        if self._site is False:
            self._site = user_site(2)
        return self._site


class StepContext:
    """What subscribers see of one ``optimizer.step()``; device quantities are computed once."""

    def __init__(self, session: "AuditSession", optimizer: torch.optim.Optimizer, step: int,
                 checked: bool) -> None:
        self.session = session
        self.optimizer = optimizer
        #: this optimizer's own step count before this step (0-based)
        self.step = step
        #: False on steps skipped by ``every=N``: checks do no device work then.
        self.checked = checked
        #: False for the step of an unaudited pass (pass sampling), seen only by subscribers
        #: with ``light_step_post``
        self.audited = True
        #: the optimizer's label in findings and reports: its class, numbered when there are
        #: several of the same class ("Adam", "SGD#2")
        self.label = session.optimizer_label(optimizer)
        self._params: list[torch.Tensor] | None = None
        self._grad_norms: torch.Tensor | None = None
        self._has_grad: list[bool] | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        """The optimizer's parameters, each once, in the order of its parameter groups."""
        if self._params is None:
            seen: set[int] = set()
            out = []
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
            self._params = out
        return self._params

    @property
    def has_grad(self) -> list[bool]:
        if self._has_grad is None:
            self._has_grad = [p.grad is not None for p in self.params]
        return self._has_grad

    def grad_norms(self) -> torch.Tensor:
        """Per-parameter L2 gradient norms (0 where ``grad is None``), one fused
        ``torch._foreach_norm`` and one stack; under FSDP summed over ranks (symmetrically)."""
        if self._grad_norms is None:
            self._grad_norms = gradient_norms(self.params, self.has_grad)
        return self._grad_norms

    def name(self, param: torch.Tensor, index: int | None = None) -> str:
        """The qualified name of ``param`` (``encoder.0.weight``), else
        ``<label>.params[<index>] <shape>``."""
        fallback = None
        if index is not None:
            fallback = f"{self.label}.params[{index}] {tuple(param.shape)}"
        return self.session.index.param_name(param, fallback)


def gradient_norms(params: list[torch.Tensor], has_grad: list[bool]) -> torch.Tensor:
    """The L2 norm of each parameter's gradient as one float32 vector on the device (0 where
    there is none); under FSDP the norms of the full gradients (one all-reduce)."""
    with torch.no_grad():
        grads = []
        for p, h in zip(params, has_grad):
            if h:
                g = dist.local(p.grad)
                if g.is_sparse:
                    g = g.coalesce()._values()
                grads.append(g)
        vector = reduce.norm_vector(grads) if grads else None
        device = vector.device if vector is not None else (
            params[0].device if params else torch.device("cpu"))
        if vector is not None and len(grads) == len(params):
            out = vector
        else:
            out = torch.zeros(len(params), device=device)
            if vector is not None:
                out[[i for i, h in enumerate(has_grad) if h]] = vector
        if dist.active() and any(dist.is_sharded(p) for p in params):
            out = dist.all_reduce_sum(out.square()).sqrt()
        return out
