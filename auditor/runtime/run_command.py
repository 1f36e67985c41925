"""``torch-audit run``: audit an unmodified training script, or profile a model.

::

    torch-audit run [OPTIONS] train.py [ARGS]...       # like `python train.py ARGS`
    torch-audit run [OPTIONS] -m package.module [ARGS]  # like `python -m package.module ARGS`
    torch-audit run [OPTIONS] model.py:build             # profile one forward/backward

The command line becomes one typed :class:`RunOptions`; :func:`resolve_settings` merges it with
``[tool.torch-audit]`` into :class:`RunSettings`, whose runtime selection is resolved and
validated once. The script runs as ``__main__`` inside one audit session
(:func:`torch_audit.runtime.audited_run.audit_script`). The report is written when the script
ends, also when it raises, calls ``sys.exit`` or is interrupted; then the script's own exception
and exit status come through:

- exit status = the script's own; when the script succeeded (or ``--max-steps`` stopped it), 1 if
  a finding at or above ``--fail-on`` was reported, else 0; 2 for usage/configuration errors
  (the codes of :mod:`torch_audit.output`);
- an uncaught exception is printed as python prints it (``sys.excepthook``) and exits 1; an
  uncaught ``KeyboardInterrupt`` ends the process with SIGINT after the normal shutdown, as python
  does.

This module imports torch; ``torch-audit lint`` never imports it (the CLI group loads ``run``
lazily).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import click
import torch

from torch_audit.output import EXIT_ERROR
from torch_audit.runtime import script as script_runner
from torch_audit.runtime.audited_run import RunOutcome, audit_script
from torch_audit.runtime.run_report import (
    MACHINE_FORMATS,
    OUTPUT_FORMATS,
    RunUsageError,
    emit_report,
    final_status,
    html_meta,
    not_checked,
    preface,
    write_file,
)
from torch_audit.runtime.pass_sampling import DEFAULT_BUDGET, parse_budget
from torch_audit.runtime.settings import INTERNAL_ERROR_CODE, RuntimeSelection
from torch_audit.runtime.startup_objects import record_interpreter_frozen

__all__ = ["RunOptions", "RunSettings", "parse_option_flags", "profile_target", "resolve_settings", "run"]


# ----------------------------------------------------------------------------------------------
# options and configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options of ``torch-audit run``, as given on the command line (one field per option;
    ``None`` for what was not given and comes from the configuration)."""

    config_file: Path | None = None
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    preview: bool | None = None
    #: ``--option RULE.KEY=VALUE`` as given
    option: tuple[str, ...] = ()
    every: int | None = None
    closure_passes: str | None = None
    #: ``--budget`` as given (a fraction, a percentage or "off")
    budget: str | None = None
    fail_fast: bool = False
    max_steps: int | None = None
    fail_on: str | None = None
    exit_zero: bool = False
    output_format: str = "text"
    output_file: str | None = None
    html_file: str | None = None
    progress: bool | None = None
    #: profile targets (``FILE.py:FUNCTION``) only
    input_shape: tuple[str, ...] = ()
    dtype: str = "float32"
    device: str = "auto"
    repeats: int = 5

    @classmethod
    def of(cls, values: dict[str, Any]) -> "RunOptions":
        """From click's parameters (or any dict of the fields); None keeps a field's default
        where the default is not None."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise TypeError(f"unknown run options: {', '.join(sorted(unknown))}")
        given = {}
        for name, value in values.items():
            if value is None and fields[name].default is not None:
                continue
            given[name] = tuple(value) if isinstance(value, list) else value
        return cls(**given)

    def with_absolute_paths(self) -> "RunOptions":
        """``-o`` and ``--html`` made absolute now: the script may ``chdir`` (into its run
        folder, say), and the files belong where the user started torch-audit."""
        out = self.output_file
        if out and out != "-":
            out = os.path.abspath(out)
        html = os.path.abspath(self.html_file) if self.html_file else None
        return dataclasses.replace(self, output_file=out, html_file=html)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """:class:`RunOptions` merged with ``[tool.torch-audit]``: everything the run needs,
    resolved and validated once."""

    selection: RuntimeSelection
    every: int
    fail_fast: bool
    fail_on: str
    config_path: Path | None
    root: Path
    closure_passes: str = "first"
    #: the cost budget (None: every training pass audited)
    budget: float | None = DEFAULT_BUDGET

    @property
    def audit_options(self) -> dict[str, Any]:
        """The same settings as keyword arguments of :func:`torch_audit.audit` (for the Python
        API; the command hands the session :attr:`selection` itself)."""
        return {
            "select": self.selection.codes,
            "ignore": [] if self.selection.report_internal else [INTERNAL_ERROR_CODE],
            "preview": True,  # the checks are chosen by code already
            "every": self.every,
            "closure_passes": self.closure_passes,
            "budget": self.budget,
            "fail_fast": self.fail_fast,
            "options": {code: dict(values) for code, values in self.selection.options.items()},
            "config": False,  # resolved already, from the script's directory upwards
        }


def _split(values: tuple[str, ...] | list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def parse_option_value(text: str) -> Any:
    """``20`` → 20, ``1e-3`` → 0.001, ``true`` → True, ``"x"`` or ``x`` → "x" (TOML values)."""
    from torch_audit.tomlcompat import toml_parser

    tomllib = toml_parser()

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_option_flags(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``--option exploding-gradient.factor=20`` → ``{"exploding-gradient": {"factor": 20}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        m = re.fullmatch(r"\s*([A-Za-z0-9_-]+)\.([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)", item)
        if not m:
            raise RunUsageError(
                f"--option expects RULE.KEY=VALUE (e.g. exploding-gradient.factor=20), got {item!r}"
            )
        rule, key, value = m.group(1), m.group(2), m.group(3).strip()
        out.setdefault(rule, {})[key] = parse_option_value(value)
    return out


def _option_flags(catalog: Any, flags: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The ``--option`` flags by check name; a rule that is unknown or static is a usage error
    (the keys and values are validated with the selection)."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in parse_option_flags(flags).items():
        rule = catalog.get(name)
        if rule is None:
            raise RunUsageError(f"--option: unknown rule {name!r} (see `torch-audit rules --kind runtime`)")
        if rule.kind != "runtime":
            raise RunUsageError(f"--option: {rule.name} is a static rule; run takes options of runtime checks")
        out.setdefault(rule.name, {}).update(values)
    return out


def resolve_settings(options: RunOptions | dict[str, Any], start: Path) -> RunSettings:
    """Merge ``[tool.torch-audit]`` (found from ``start`` upwards, or ``--config``) with the
    command line (the command line wins); raises :class:`RunUsageError`."""
    from torch_audit.catalog import CatalogError, UnknownSelector, runtime_catalog
    from torch_audit.config import ConfigError, find_config, load_config
    from torch_audit.runtime.settings import resolve_selection

    if isinstance(options, dict):
        options = RunOptions.of(options)
    try:
        # the static rules from their index: selectors and options naming them are validated
        # without importing them (and libcst)
        catalog = runtime_catalog()
    except CatalogError as exc:
        raise RunUsageError(f"broken rule catalogue: {exc}") from None
    try:
        path = options.config_file if options.config_file is not None else find_config(start)
        config = load_config(path, catalog)
    except ConfigError as exc:
        raise RunUsageError(str(exc)) from None
    flags = _option_flags(catalog, options.option)
    try:
        selection = resolve_selection(
            catalog, config=config, select=_split(options.select) or None,
            ignore=_split(options.ignore), extend_select=_split(options.extend_select),
            preview=options.preview, options=[flags],
        )
    except UnknownSelector as exc:
        raise RunUsageError(str(exc)) from None
    except (ValueError, TypeError) as exc:  # an option key or value of --option
        raise RunUsageError(f"--option: {exc}") from None
    budget = config.budget
    if options.budget is not None:
        try:
            budget = parse_budget(options.budget)
        except ValueError as exc:
            raise RunUsageError(f"--budget: {exc}") from None
    return RunSettings(
        selection=selection, every=options.every or 1, fail_fast=options.fail_fast,
        fail_on=options.fail_on or config.fail_on, config_path=path,
        root=config.root if path else Path.cwd(),
        closure_passes=options.closure_passes or "first", budget=budget,
    )


# ----------------------------------------------------------------------------------------------
# the click command
# ----------------------------------------------------------------------------------------------

_PROFILE_TARGET = re.compile(r"(?P<where>.+?):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


def profile_target(target: str) -> tuple[str, str] | None:
    """``model.py:build`` or ``package.module:build`` → (where, attribute), else None."""
    if os.path.exists(target):
        return None
    m = _PROFILE_TARGET.fullmatch(target)
    if not m:
        return None
    where = m.group("where")
    if where.endswith(".py") or os.path.exists(where) or re.fullmatch(r"[A-Za-z_][\w.]*", where):
        return where, m.group("attr")
    return None


@click.command(
    "run",
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": ["-h", "--help"],
    },
)
@click.argument("target", metavar="SCRIPT|-m MODULE|FILE.py:FUNCTION")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-m", "as_module", is_flag=True, help="Run the library module TARGET as a script, like `python -m`.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Use this pyproject.toml or torch-audit.toml instead of searching for one.")
@click.option("--select", multiple=True, help="Runtime checks to enable: codes, prefixes (TA7), names or ALL.")
@click.option("--ignore", multiple=True, help="Runtime checks to disable (same forms as --select).")
@click.option("--extend-select", multiple=True, help="Checks to enable in addition to the selection.")
@click.option("--preview/--no-preview", default=None, help="Enable preview checks.")
@click.option("--option", "option", multiple=True, metavar="RULE.KEY=VALUE",
              help="Set a check's option (a TOML value), e.g. exploding-gradient.factor=20. Repeatable.")
@click.option("--every", type=click.IntRange(min=1), default=None, help="Run the numeric step checks every N-th optimizer step.")
@click.option("--closure-passes", type=click.Choice(["first", "all"]), default=None,
              help="Which evaluations of an optimizer's closure in one step() to watch (LBFGS runs many) [default: first].")
@click.option("--budget", metavar="FRACTION|off", default=None,
              help="The audit's share of a training pass before short passes are audited in bursts "
                   "(0.02, 2%, or off: audit every pass) [default: 0.02, or the configuration's].")
@click.option("--fail-fast", is_flag=True, help="Stop the script at the first error-severity finding.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop the script cleanly after N optimizer steps and report (a CI smoke test).")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]), default=None,
              help="Exit 1 for findings at or above this severity when the script succeeded [default: error].")
@click.option("--exit-zero", is_flag=True, help="Exit with the script's status even when there are findings.")
@click.option("--output-format", type=click.Choice(OUTPUT_FORMATS), default="text", show_default=True,
              help="text/full go to stderr, github to stdout; json, sarif, gitlab and junit need -o.")
@click.option("-o", "--output-file", type=click.Path(dir_okay=False, path_type=str), help="Write the report to this file (- for stdout, after the script's output).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=str),
              help="Also write a self-contained HTML report with charts.")
@click.option("--progress/--no-progress", default=None, help="A status line on stderr [default: when stderr is a terminal].")
@click.option("--input-shape", multiple=True, metavar="N,C,H,W[:DTYPE]",
              help="FILE.py:FUNCTION: the shape of an input (repeat for several inputs).")
@click.option("--dtype", default="float32", show_default=True, help="FILE.py:FUNCTION: dtype of --input-shape inputs.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="FILE.py:FUNCTION: where to run the model.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="FILE.py:FUNCTION: measured passes after a warm-up; times are their medians.")
@click.pass_context
def run(ctx: click.Context, target: str, args: tuple[str, ...], as_module: bool, **opts: Any) -> None:
    """Audit a training script (or profile a model) at run time.

    \b
    torch-audit run train.py --epochs 1        runs `python train.py --epochs 1`, audited
    torch-audit run -m trainer.main ARGS       runs `python -m trainer.main ARGS`, audited
    torch-audit run --max-steps 20 train.py    stops after 20 optimizer steps (CI smoke test)
    torch-audit run model.py:build --input-shape 8,3,32,32
                                               profiles one forward and backward pass

    The script's exit status comes through; when it succeeded, the status is 1 if a finding
    at or above --fail-on was reported. Options go before TARGET; everything after it is the
    script's.
    """
    record_interpreter_frozen()  # before anything of ours could freeze objects
    if target.startswith("-") and target != "-":
        raise click.UsageError(f"no such option: {target}")
    if args and not as_module and profile_target(target) is not None:
        # A profile target takes no script arguments: options may follow it.
        opts, args = _reparse_trailing(ctx, opts, args, target)
    try:
        code = run_target(target, list(args), as_module, RunOptions.of(opts))
    except RunUsageError as exc:
        click.echo(f"torch-audit: error: {exc}", err=True)
        code = EXIT_ERROR
    sys.exit(code)


def _reparse_trailing(ctx: click.Context, opts: dict[str, Any], args: tuple[str, ...],
                      target: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    assert ctx.command is not None
    sub = ctx.command.make_context(ctx.info_name or "run", [*args, target], parent=ctx.parent)
    merged = dict(opts)
    for key, value in sub.params.items():
        if key in merged and sub.get_parameter_source(key) is not click.core.ParameterSource.DEFAULT:
            if isinstance(value, tuple) and isinstance(merged.get(key), tuple):
                merged[key] = merged[key] + value
            else:
                merged[key] = value
    if sub.params.get("target") != target or sub.params.get("args"):
        raise click.UsageError(f"unexpected arguments after {target}: {' '.join(args)}")
    return merged, ()


def run_target(target: str, args: list[str], as_module: bool, options: RunOptions) -> int:
    """Profile ``FILE.py:FUNCTION`` or audit a script (or ``-m`` module); the exit status."""
    options = options.with_absolute_paths()
    pt = None if as_module else profile_target(target)
    if pt is not None:
        from torch_audit.runtime.profile_command import run_profile_command

        start = Path(pt[0]) if os.path.exists(pt[0]) else Path.cwd()
        return run_profile_command(pt[0], pt[1], args, settings=resolve_settings(options, start),
                                   options=options)
    if as_module:
        start = Path.cwd()
    else:
        if not os.path.exists(target):
            raise RunUsageError(f"can't open file {os.path.abspath(target)!r}: no such file")
        start = Path(target)
    settings = resolve_settings(options, start)
    fmt = options.output_format
    if fmt in MACHINE_FORMATS and not options.output_file:
        raise RunUsageError(
            f"--output-format {fmt} needs -o FILE: stdout belongs to the script, and a report "
            f"mixed into its output could not be parsed (-o - writes it to stdout after the "
            f"script's output, for scripts that print nothing)"
        )
    _register_sigint_exit()
    try:
        outcome = audit_script(
            target, args, module=as_module, selection=settings.selection, every=settings.every,
            closure_passes=settings.closure_passes, budget=settings.budget,
            fail_fast=settings.fail_fast,
            max_steps=options.max_steps,
            progress=sys.stderr if _show_progress(options) else None,
            history=bool(options.html_file),
        )
    except script_runner.ScriptNotFound as exc:
        raise RunUsageError(str(exc)) from None
    if outcome.rank in (None, 0):
        _write_reports(target if not as_module else f"-m {target}", args, outcome, options, settings)
    status = final_status(outcome, fail_on=settings.fail_on, exit_zero=options.exit_zero)
    _say_how_the_script_ended(outcome)
    return status


def _show_progress(options: RunOptions) -> bool:
    if options.progress is not None:
        return options.progress
    try:
        return sys.stderr.isatty()
    except Exception:
        return False


def _write_reports(shown: str, args: list[str], outcome: RunOutcome, options: RunOptions,
                   settings: RunSettings) -> None:
    """The report in ``--output-format`` (with the preface for text) and ``--html``."""
    fmt = options.output_format
    unchecked = not_checked(outcome, options.max_steps)
    emit_report(
        outcome.findings, fmt=fmt, output_file=options.output_file, root=settings.root,
        preface=preface(shown, outcome, options.max_steps), unchecked=bool(unchecked),
    )
    if unchecked and fmt not in ("text", "full"):  # the text preface carries them otherwise
        for note in unchecked:
            click.echo(f"torch-audit: note: {note}.", err=True)
    if options.html_file:
        from torch_audit.report.html import render_html

        page = render_html(outcome.findings, history=outcome.history, title=f"torch-audit run {shown}",
                           root=settings.root,
                           meta=html_meta(shown, args, outcome, torch.__version__, options.max_steps))
        write_file(options.html_file, page)


def _say_how_the_script_ended(outcome: RunOutcome) -> None:
    """After the report: the script's exception as python prints it, the ``--fail-fast`` stop,
    an interrupt (the process then ends with SIGINT), or the message of ``sys.exit("...")``."""
    global _sigint_on_exit

    if outcome.exception is not None:
        script_runner.report_exception(outcome.exception)
    elif outcome.audit_failure is not None:
        click.echo(f"torch-audit: stopped at the first error (--fail-fast): {outcome.audit_failure}", err=True)
    elif outcome.interrupted is not None:
        script_runner.report_exception(outcome.interrupted)
        _sigint_on_exit = True
    elif outcome.system_exit is not None:
        script_runner.print_exit_message(outcome.system_exit)


_sigint_on_exit = False


def _exit_with_sigint() -> None:
    """Registered before the script runs, so it runs after the script's own ``atexit``
    handlers: end with SIGINT as python does after an uncaught KeyboardInterrupt."""
    if not _sigint_on_exit:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except Exception:  # pragma: no cover - platforms without kill()
        pass


_registered = False


def _register_sigint_exit() -> None:
    global _registered
    if not _registered:
        import atexit

        atexit.register(_exit_with_sigint)
        _registered = True
