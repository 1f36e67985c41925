"""Root cause first: one non-finite value makes several findings (the activation, then the loss,
the gradients and, after the update, the parameters), and a report that lists them in the order
they were read hides which one to fix. This module groups them into chains, orders each chain
by where the value was born and marks the rest as follow-ons. Torch-free: it sorts findings
only."""

from __future__ import annotations

import dataclasses

from torch_audit.findings import Finding

__all__ = ["root_cause_first", "chains", "root_cause_notes"]

#: where in a training step a non-finite value shows: forward, loss, backward, update
STAGE = {"TA704": 0, "TA701": 1, "TA702": 2, "TA703": 3}
#: non-finite parameters poison every later step: what comes after them follows from them
POISONS = "TA703"
MARK = "(follow-on of "


def _step(f: Finding) -> int:
    return f.step if f.step is not None else -1


def chains(findings: list[Finding]) -> list[tuple[Finding, list[Finding]]]:
    """The non-finite findings (nonfinite-activation, -loss, -gradient, -parameter) as chains
    ``(root cause, follow-ons)``, each ordered by (step, stage). A finding belongs to the chain
    before it when it is in the root's step, or after non-finite parameters (which poison every
    later step); otherwise it starts a chain of its own."""
    family = sorted((f for f in findings if f.code in STAGE), key=lambda f: (_step(f), STAGE[f.code]))
    out: list[tuple[Finding, list[Finding]]] = []
    poisoned_at: int | None = None
    for f in family:
        if out and (_step(f) == _step(out[-1][0]) or (poisoned_at is not None and _step(f) >= poisoned_at)):
            out[-1][1].append(f)
        else:
            out.append((f, []))
            poisoned_at = None
        if f.code == POISONS and poisoned_at is None:
            poisoned_at = _step(f)
    return out


def _marked(f: Finding, root: Finding) -> Finding:
    if MARK in f.message:
        return f
    where = f" at step {root.step}" if root.step is not None else ""
    return dataclasses.replace(f, message=f"{f.message} {MARK}{root.code}{where})")


def root_cause_first(findings: list[Finding]) -> list[Finding]:
    """``findings`` with each chain (see :func:`chains`) listed root cause first and its
    follow-ons' messages ending in "(follow-on of TA704 at step 3)". The chains take the place
    of the first non-finite finding; the other findings keep their order. The findings passed
    in are not changed (follow-ons are copies)."""
    found = chains(findings)
    if not found or (len(found) == 1 and not found[0][1]):
        return list(findings)
    chained = [g for root, rest in found for g in [root, *(_marked(f, root) for f in rest)]]
    out: list[Finding] = []
    for f in findings:
        if f.code in STAGE:
            out.extend(chained)
            chained = []
        else:
            out.append(f)
    return out


def root_cause_notes(findings: list[Finding]) -> list[str]:
    """One sentence per chain with follow-ons, for a report whose renderer sorts by file and
    line: which finding to fix first."""
    notes = []
    for root, rest in chains(findings):
        if rest:
            where = f" at {root.path}:{root.line}" if root.path else ""
            step = f" (step {root.step})" if root.step is not None else ""
            notes.append(f"{root.code} {root.name}{where}{step} is the root cause of "
                         f"{len(rest)} non-finite finding{'s' if len(rest) != 1 else ''} "
                         f"marked follow-on: fix it first")
    return notes
