"""``torch-audit run FILE.py:FUNCTION``: build the model, profile it
(:func:`torch_audit.runtime.profile.profile_model`) and write the table, the findings and the
HTML report. The profile itself knows nothing of the command line or the reports."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import torch

from torch_audit.runtime import script as script_runner
from torch_audit.runtime.profile import (
    ProfileError,
    load_builder,
    make_input,
    parse_dtype,
    parse_shape,
    profile_model,
    render_table,
    resolve_device,
    unpack_build,
)
from torch_audit.runtime.run_report import RunUsageError, emit_report, findings_fail, write_file

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.runtime.run_command import RunOptions, RunSettings

__all__ = ["run_profile_command"]


def _build(where: str, attr: str, argv: list[str], options: "RunOptions") -> tuple | int:
    """``(model, inputs, loss_fn, device)``, or the exit status 1 after the user's code raised
    (printed as python prints it); a bad option or target is a usage error."""
    try:
        device = resolve_device(options.device or "auto")
        dtype = parse_dtype(options.dtype or "float32")
        shapes = [parse_shape(s, dtype) for s in options.input_shape]
        builder = load_builder(where, attr, argv)
    except ProfileError as exc:
        raise RunUsageError(str(exc)) from None
    except (Exception, SystemExit) as exc:  # the user's module failed to import
        script_runner.report_exception(exc)
        return 1
    try:
        model, inputs, loss_fn = unpack_build(builder())
    except ProfileError as exc:
        raise RunUsageError(str(exc)) from None
    except Exception as exc:
        script_runner.report_exception(exc)
        return 1
    if shapes:
        made = [make_input(shape, dt, device) for shape, dt in shapes]
        inputs = made[0] if len(made) == 1 else tuple(made)
    if inputs is None:
        raise RunUsageError(f"{where}:{attr} returned only a module: give its inputs with --input-shape")
    return model, inputs, loss_fn, device


def run_profile_command(where: str, attr: str, argv: list[str], *, settings: "RunSettings",
                        options: "RunOptions") -> int:
    """The ``torch-audit run FILE.py:FUNCTION`` command; returns the exit status."""
    built = _build(where, attr, argv, options)
    if isinstance(built, int):
        return built
    model, inputs, loss_fn, device = built
    try:
        profile = profile_model(model, inputs, loss_fn=loss_fn, device=device,
                                selection=settings.selection,
                                audit_options={"every": settings.every, "fail_fast": settings.fail_fast},
                                repeats=options.repeats or 5)
    except Exception as exc:
        script_runner.report_exception(exc)
        return 1
    fmt = options.output_format
    output_file = options.output_file
    if output_file == "-":  # stdout, as without -o
        output_file = None
    if fmt in ("json", "text", "full"):
        if fmt == "json":
            text = json.dumps(profile.to_dict(), indent=2) + "\n"
        else:
            from torch_audit.report import render

            text = render_table(profile) + "\n" + render(profile.findings, fmt, show_fix_hint=False)
        if output_file:
            write_file(output_file, text)
        else:
            sys.stdout.write(text)
    else:
        emit_report(profile.findings, fmt=fmt, output_file=output_file, root=settings.root)
    if options.html_file:
        from torch_audit.report.html import render_html

        write_file(options.html_file, render_html(
            profile.findings, title=f"torch-audit run {where}:{attr}", root=settings.root,
            profile=profile.to_dict(), meta={"command": " ".join(["torch-audit run", f"{where}:{attr}", *argv]),
                                             "torch": torch.__version__},
        ))
    sys.stdout.flush()
    if not options.exit_zero and findings_fail(profile.findings, settings.fail_on):
        return 1
    return 0
