from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


class DeadActivations(RuntimeCheck):
    """## What it does
    Samples the outputs of `nn.ReLU` modules during training and reports
    a ReLU whose units are zero for every sample in a window of sampled steps, for at least a
    `threshold` fraction of its units. A unit is one position of the output per sample (a
    feature, or a channel at one spatial position).

    ## Why is this bad?
    A ReLU that outputs zero has zero gradient: the layers before it stop learning through it.
    Whole layers die after a too-large learning rate step, a large negative bias, or a bad
    initialisation, and the network quietly trains with a fraction of its capacity.

    ## Known problems
    Sampled: every `sample_every`-th optimizer step is observed (one `amax` reduction per ReLU
    call on those steps), and the verdict comes after `window` samples. Only `nn.ReLU` modules
    are observed (through the session's module hooks): `F.relu`, `torch.relu` and
    `Tensor.relu` called in a `forward` are not, because seeing them would mean replacing
    `F.relu` or intercepting every torch call of the forward pass. Only forward passes with
    gradients enabled are sampled.

    ## References
    - https://arxiv.org/abs/1903.06733
    - https://cs231n.github.io/neural-networks-1/#actfun
    """

    code = "TA709"
    name = "dead-activations"
    severity = Severity.WARNING
    message = "{fraction:.0%} of the units of {where} were zero for every sample in {samples} sampled steps"
    fix_title = "Lower the learning rate, check bias initialisation, or use LeakyReLU/GELU"
    events = frozenset({"relu", "step_pre"})
    options = {
        "threshold": Option(0.9, "fraction of dead units that is reported", float),
        "sample_every": Option(10, "sample every N-th optimizer step", int),
        "window": Option(2, "sampled steps per verdict", int),
    }

    def setup(self) -> None:
        import torch

        self._torch = torch
        self._alive: dict = {}
        self._where: dict = {}
        self._samples = 0
        self._sampled_step = -1

    def close(self) -> None:
        self._alive = {}

    def on_relu(self, event) -> None:
        torch = self._torch
        step = self.session.step
        if step % self.opts["sample_every"] or not torch.is_grad_enabled():
            return
        out = event.output
        if out.dim() < 2 or out.shape[0] == 0 or not out.is_floating_point():
            return
        from torch_audit.runtime.check_helpers import site_str

        module = event.module
        site = event.site
        where = f"{self.session.index.name(module)} (called at {site_str(site)})"
        with torch.no_grad():
            alive = out.detach().amax(0) > 0
        prev = self._alive.get(where)
        if prev is not None and prev.shape == alive.shape:
            torch.logical_or(prev, alive, out=prev)
        else:
            self._alive[where] = alive
            self._where[where] = (module, site)
        self._sampled_step = step

    def on_step_pre(self, ctx) -> None:
        if self._sampled_step != ctx.step or not self._alive:
            return
        self._samples += 1
        if self._samples < self.opts["window"]:
            return
        torch = self._torch
        keys = list(self._alive)
        with torch.no_grad():
            dev = self._alive[keys[0]].device
            dead = torch.stack([1 - self._alive[k].float().mean().to(dev) for k in keys])
        samples, step = self._samples, ctx.step
        where = dict(self._where)
        self._alive, self._where, self._samples = {}, {}, 0

        def check(values: list[float]) -> None:
            for key, frac in zip(keys, values):
                if frac >= self.opts["threshold"]:
                    module, site = where[key]
                    path, line = site if site else (None, None)
                    self.report(key, step=step, value=frac, module=module, path=path, line=line,
                                fraction=frac, where=key, samples=samples)

        self.defer(dead, check)
