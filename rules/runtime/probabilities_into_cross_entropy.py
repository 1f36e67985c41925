from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


class ProbabilitiesIntoCrossEntropy(RuntimeCheck):
    """## What it does
    Checks the input of `F.cross_entropy`/`nn.CrossEntropyLoss` and of `F.nll_loss`/`nn.NLLLoss`:
    when every value is non-negative and every row sums to one along the class dimension, the
    input is a probability distribution (a softmax), not logits (cross-entropy) or
    log-probabilities (NLL).

    ## Why is this bad?
    Cross-entropy applies `log_softmax` itself. Feeding it probabilities applies softmax twice:
    the loss still decreases, but its gradients are squashed, training is slow and the model
    ends up badly calibrated. `nll_loss` expects `log_softmax` output: given probabilities it
    computes `-p[target]` instead of `-log p[target]`, a different objective entirely. Nothing crashes; the static rule `softmax-before-cross-entropy`
    catches the visible cases, this check catches the ones hidden behind helpers and configs.

    ## Known problems
    Sampled: at each call site the first three calls and then every `sample_every`-th call are
    checked (counted per call site, so that a script without an optimizer step, or with
    validation calls between steps, is sampled too), each reading at most the first 64 rows
    of the input: a softmax makes every row a distribution, so a sample of rows is as
    conclusive as all of them, at a cost that does not grow with the batch. The loss modules are seen wherever they run; `F.cross_entropy`
    and `F.nll_loss` only when called outside a module's `forward` (after the model's forward,
    as training loops do; a loss computed inside `forward`, as Hugging Face models do, is not
    seen). Log-probabilities (from `log_softmax`) are fine for both and are not reported.

    ## References
    - https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html
    """

    code = "TA707"
    name = "probabilities-into-cross-entropy"
    severity = Severity.ERROR
    message = "cross-entropy input at {site} is already a probability distribution (rows sum to 1)"
    fix_title = "Pass the logits; remove the softmax before the loss"
    events = frozenset({"cross_entropy"})
    options = {
        "tolerance": Option(1e-3, "allowed deviation of row sums from one", float),
        "sample_every": Option(10, "after the first three calls at a call site, check every N-th call there", int),
    }

    #: rows (along the batch dimension) read per check
    ROWS = 64
    #: calls checked at each call site before sampling starts
    FIRST_CALLS = 3

    def setup(self) -> None:
        self._done: set = set()
        #: call site -> calls seen there
        self._calls: dict = {}

    def on_cross_entropy(self, event) -> None:
        x = event.input
        if not x.is_floating_point() or x.dim() == 0:
            return
        dim = 1 if x.dim() >= 2 else 0
        if x.shape[dim] < 2 or x.numel() == 0:
            return
        step = self.session.step
        site = event.site
        if site in self._done:
            return
        calls = self._calls.get(site, 0)
        self._calls[site] = calls + 1
        if calls >= self.FIRST_CALLS and calls % self.opts["sample_every"]:
            return
        import torch

        from torch_audit.runtime.check_helpers import site_str

        with torch.no_grad():
            xd = x.detach()
            if dim == 1 and xd.shape[0] > self.ROWS:
                xd = xd[:self.ROWS]
            flag = (xd.amin() >= 0) & ((xd.sum(dim) - 1).abs().amax() <= self.opts["tolerance"])

        nll = getattr(event, "loss", "cross_entropy") == "nll_loss"

        def check(values: list[float]) -> None:
            if values[0] > 0.5 and site not in self._done:
                self._done.add(site)
                path, line = site if site else (None, None)
                extra = {}
                if nll:
                    extra = dict(
                        message=f"nll_loss input at {site_str(site)} is a probability "
                                "distribution (rows sum to 1), not log-probabilities",
                        help="Use log_softmax instead of softmax before nll_loss (or pass the "
                             "logits to cross_entropy)")
                self.report(site_str(site), step=step, path=path, line=line,
                            module=event.module, site=site_str(site), **extra)

        self.defer(flag.reshape(1), check)
