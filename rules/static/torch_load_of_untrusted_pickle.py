import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import bool_argument, ctx_target, untrusted_source
from torch_audit.rule import StaticRule

#: torch.load's default became weights_only=True in this release
SAFE_DEFAULT = (2, 6, 0)


class TorchLoadOfUntrustedPickle(StaticRule):
    """## What it does
    Finds `torch.load` with `weights_only=False` on a path or URL that comes from outside the
    program: a command-line argument (`sys.argv`, an `argparse` namespace), user input, a
    download (`hf_hub_download`, `requests.get`, `urllib`), or a literal URL. With `torch-version`
    set below 2.6 (where `weights_only` defaulted to False), a call without `weights_only` counts
    too.

    ## Why is this bad?
    `weights_only=False` unpickles arbitrary Python objects: a crafted checkpoint runs any code
    it likes on the machine that loads it. Checkpoints downloaded from a hub or named by whoever
    runs the script are exactly the files an attacker controls.

    ## Known problems
    Only origins visible in the same function are followed; a path passed in by a caller is not
    treated as untrusted. Plain `weights_only=False` on other paths is not reported (it is an
    explicit, reviewed decision); `torch-load-without-weights-only` reports a missing argument.

    ## References
    - [torch.load and weights_only](https://pytorch.org/docs/stable/generated/torch.load.html)
    - [Python pickle security warning](https://docs.python.org/3/library/pickle.html)
    - [CVE-2025-32434](https://github.com/pytorch/pytorch/security/advisories/GHSA-53q9-r3pm-6pq6)
    """

    code = "TA611"
    name = "torch-load-of-untrusted-pickle"
    severity = Severity.ERROR
    message = "torch.load({how}) of a file from {origin}: unpickling a crafted file runs arbitrary code"
    fix_title = "Load with weights_only=True (add trusted classes with torch.serialization.add_safe_globals)"

    def leave_Module(self, node: cst.Module) -> None:
        target = ctx_target(self.ctx)
        old_default = target is not None and target < SAFE_DEFAULT
        for call in self.ctx.indexer.all_calls:
            if call.qualname != "torch.load":
                continue
            args = call.node.args
            if any(a.star == "**" for a in args):
                continue
            flag = bool_argument(call.node, None, "weights_only")
            given = any(a.keyword is not None and a.keyword.value == "weights_only" for a in args)
            if flag is not False and not (old_default and not given):
                continue
            f = call.arg(0, "f")
            if f is None:
                continue
            origin = untrusted_source(self.ctx, f.value, call.scope, call.stmt.index)
            if origin is None:
                continue
            self.report(
                call.node,
                how="weights_only=False" if given else f"without weights_only on torch {_v(target)}",
                origin=origin,
            )


def _v(version) -> str:
    return ".".join(str(x) for x in version[:2])
