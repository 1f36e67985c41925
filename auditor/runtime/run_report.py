"""What ``torch-audit run`` says when the script has ended: the preface ("audited 3 optimizer
steps of train.py"), what did not run, the report in the chosen format (through
:func:`torch_audit.report.render` and :mod:`torch_audit.output`, as ``lint``), the HTML report's
facts and the exit status. Torch-free.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from torch_audit.findings import Finding
from torch_audit.output import FORMATS, TEXT_FORMATS, OutputError, fails, write_output

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.runtime.audited_run import RunOutcome

__all__ = ["MACHINE_FORMATS", "OUTPUT_FORMATS", "RunUsageError", "describe_steps", "emit_report",
           "final_status", "findings_fail", "html_meta", "not_checked", "preface", "write_file"]

#: ``--output-format`` of ``run``: the linter's formats (:data:`torch_audit.output.FORMATS`)
OUTPUT_FORMATS = FORMATS
#: formats a program parses as a whole: never mixed into the script's stdout (they need ``-o``)
MACHINE_FORMATS = tuple(f for f in FORMATS if f not in (*TEXT_FORMATS, "github"))


class RunUsageError(Exception):
    """A usage or configuration problem: one line on stderr, exit status 2."""


def write_file(path: str, text: str) -> None:
    """Write a report file atomically (:func:`torch_audit.output.write_output`)."""
    try:
        write_output(text, path)
    except OutputError as exc:
        raise RunUsageError(str(exc)) from None


def _color(stream: TextIO) -> bool:
    from torch_audit.report import color_wanted  # the linter's rule: NO_COLOR, FORCE_COLOR, a terminal

    return color_wanted(stream)


def emit_report(
    findings: list[Finding],
    *,
    fmt: str,
    output_file: str | None,
    root: Path,
    preface: str = "",
    unchecked: bool = False,
) -> None:
    """Text goes to stderr (stdout belongs to the script), github annotations to stdout, or any
    format to ``--output-file`` (written atomically; ``-`` is stdout, after the script's own
    output)."""
    from torch_audit.report import render

    if fmt in TEXT_FORMATS:
        stream = sys.stderr
        color = output_file is None and _color(stream)
        if unchecked and not findings:  # not "All checks passed!": the notes say what did not run
            text = "No findings, but the checks at optimizer.step() did not run (see the notes above).\n"
        else:
            text = render(findings, fmt, color=color, show_fix_hint=False)
        if preface:
            text = preface + "\n" + text
    else:
        stream = sys.stdout
        catalog = None
        if fmt == "sarif":  # rule metadata for the findings' codes: runtime checks only
            from torch_audit.catalog import runtime_catalog

            catalog = runtime_catalog()
        text = render(findings, fmt, catalog=catalog, root=root)
    if output_file == "-":
        stream = sys.stdout
    elif output_file is not None:
        write_file(output_file, text)
        return
    stream.write(text)
    stream.flush()


def describe_steps(outcome: "RunOutcome") -> str:
    """``3 optimizer steps``; with several optimizers the steps of each, not their sum (a GAN
    stopped by ``--max-steps 4`` ran "4 steps of 2 optimizers", not 8 optimizer steps)."""
    counts = outcome.optimizer_steps
    if len(counts) <= 1:
        steps = outcome.steps
        return f"{steps} optimizer step{'s' if steps != 1 else ''}"
    if len(set(counts.values())) == 1:
        steps = next(iter(counts.values()))
        return f"{steps} step{'s' if steps != 1 else ''} of {len(counts)} optimizers"
    each = ", ".join(f"{label}: {n} step{'s' if n != 1 else ''}" for label, n in counts.items())
    return f"{len(counts)} optimizers ({each})"


def not_checked(outcome: "RunOutcome", max_steps: int | None = None) -> list[str]:
    """What did not run, so that a report never says "All checks passed!" after nothing was
    checked: the checks at ``optimizer.step()`` need a ``torch.optim`` optimizer to step, and
    ``--max-steps`` counts those steps."""
    if outcome.steps:
        return []
    out = []
    if outcome.exception is not None:
        out.append(f"the script raised {type(outcome.exception).__name__} before the first "
                   "optimizer step: the checks at optimizer.step() did not run")
    elif outcome.interrupted is None and outcome.audit_failure is None:
        out.append("no torch.optim optimizer stepped: the checks at optimizer.step() (gradients, "
                   "parameters, updates, unused and frozen parameters) did not run; a "
                   "hand-written update (p -= lr * p.grad) is not an optimizer step")
    if max_steps is not None and not outcome.stopped_at_max_steps:
        out.append(f"--max-steps {max_steps} never fired: it counts torch.optim optimizer steps")
    return out


def _how_it_ended(outcome: "RunOutcome") -> str:
    if outcome.stopped_at_max_steps:
        return " (stopped by --max-steps)"
    if outcome.interrupted is not None:
        return " (interrupted)"
    if outcome.exception is not None:
        return f" (the script raised {type(outcome.exception).__name__})"
    if outcome.audit_failure is not None:
        return " (stopped by --fail-fast)"
    if outcome.system_exit is not None and outcome.status != 0:
        return f" (the script exited with status {outcome.status})"
    return ""


def preface(target: str, outcome: "RunOutcome", max_steps: int | None = None) -> str:
    """``torch-audit: audited 3 optimizer steps of train.py (stopped by --max-steps).`` and the
    notes: the session's, which finding to fix first, what did not run."""
    from torch_audit.runtime.causes import root_cause_notes

    notes = "".join(f"\ntorch-audit: note: {note}."
                    for note in [*outcome.notes, *root_cause_notes(outcome.findings),
                                 *not_checked(outcome, max_steps)])
    return f"torch-audit: audited {describe_steps(outcome)} of {target}{_how_it_ended(outcome)}.{notes}"


def html_meta(target: str, args: list[str], outcome: "RunOutcome", torch_version: str,
              max_steps: int | None = None) -> dict[str, str]:
    """The facts at the top of the HTML report."""
    ended = "finished"
    if outcome.stopped_at_max_steps:
        ended = "stopped by --max-steps"
    elif outcome.interrupted is not None:
        ended = "interrupted"
    elif outcome.exception is not None:
        ended = f"raised {type(outcome.exception).__name__}"
    elif outcome.status:
        ended = f"exited with status {outcome.status}"
    meta = {
        "command": " ".join(["torch-audit run", target, *args]),
        "audited": describe_steps(outcome),
        "script": ended,
        "torch": torch_version,
    }
    for n, note in enumerate(not_checked(outcome, max_steps), 1):
        meta[f"not checked ({n})" if n > 1 else "not checked"] = note
    for n, note in enumerate(outcome.notes, 1):  # e.g. that passes were sampled
        meta[f"note ({n})" if n > 1 else "note"] = note
    return meta


def final_status(outcome: "RunOutcome", *, fail_on: str, exit_zero: bool) -> int:
    """The script's own status, or 1 for findings at or above ``fail_on`` when it succeeded
    (:func:`torch_audit.output.exit_code`'s decision, as ``lint`` makes it)."""
    from torch_audit.output import exit_code

    if outcome.status != 0:
        return outcome.status
    return exit_code(outcome.findings, fail_on=fail_on, exit_zero=exit_zero)


def findings_fail(findings: list[Finding], fail_on: str) -> bool:
    """Whether ``findings`` fail the run at ``fail_on`` (:func:`torch_audit.output.fails`)."""
    return fails(findings, fail_on)
