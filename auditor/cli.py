"""The ``torch-audit`` command line: ``lint``, ``rules``, ``rule`` (and ``run``).

Exit codes and output formats are :mod:`torch_audit.output`'s. The commands' drivers
(``torch_audit.lint.command``, ``torch_audit.runtime.run_command``) are imported when a command runs and
never import this module back.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from torch_audit import __version__
from torch_audit.output import EXIT_ERROR, EXIT_FINDINGS, FAIL_LEVELS, FORMATS


def _fail(message: str) -> "click.exceptions.Exit":
    click.echo(f"torch-audit: error: {message}", err=True)
    return click.exceptions.Exit(EXIT_ERROR)


#: `run`'s line in `torch-audit --help`, written here so that listing the commands does not import
#: the runtime (and torch); tests/test_startup.py checks it matches the command's own help.
RUN_SHORT_HELP = "Audit a training script (or profile a model) at run time."


def _run_unavailable(exc: ImportError) -> click.Command:
    """`run` when the runtime cannot be imported (the lint-only install has no torch): one line
    saying what to install or what failed, exit 2, for any arguments (`--help` included),
    instead of click's "No such command 'run'"."""
    from torch_audit.runtime.errors import RUNTIME_EXTRA_HINT, is_torch_missing

    if is_torch_missing(exc):
        why = f"needs torch, which is not installed: {RUNTIME_EXTRA_HINT}"
    else:
        why = f"cannot import the runtime auditor: {type(exc).__name__}: {exc}"

    def unavailable() -> None:
        click.echo(f"torch-audit: error: `torch-audit run` {why}", err=True)
        sys.exit(EXIT_ERROR)

    return click.Command(
        "run", callback=unavailable, help=RUN_SHORT_HELP, add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class _Group(click.Group):
    """Commands load lazily: `run` imports the runtime (and torch) only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["lint", "run", "rules", "rule", "server"]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name == "run" and "run" not in self.commands:
                rows.append((name, RUN_SHORT_HELP))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "run" and "run" not in self.commands:
            try:
                from torch_audit.runtime.run_command import run as run_command
            except ImportError as exc:  # no torch, or a torch that fails to import
                run_command = _run_unavailable(exc)
            self.add_command(run_command, "run")
        return super().get_command(ctx, name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="torch-audit")
def cli() -> None:
    """Find the silent bugs of PyTorch code.

    \b
    torch-audit lint src/          static checks; never imports torch or your code
    torch-audit run train.py       audit an unmodified training script at run time
    torch-audit rule TA101         explain a rule
    """


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Use this pyproject.toml or torch-audit.toml instead of searching for one.")
@click.option("--select", multiple=True, help="Rules to enable: codes, prefixes (TA1), names or ALL. Comma-separated or repeated.")
@click.option("--ignore", multiple=True, help="Rules to disable (same forms as --select).")
@click.option("--extend-select", multiple=True, help="Rules to enable in addition to the selection.")
@click.option("--preview/--no-preview", default=None, help="Enable preview rules.")
@click.option("--output-format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text: one line per finding; full: each finding with its source line, a caret under it and what to do; "
                   "json; sarif (code scanning); github (workflow annotations); gitlab (Code Quality report); junit (XML).")
@click.option("-o", "--output-file", type=click.Path(dir_okay=False, path_type=str), help="Write the report to this file.")
@click.option("--statistics", is_flag=True, help="Print the number of findings per rule.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write .torch_audit_cache/.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Worker processes (default: CPU count; 1 runs in-process).")
@click.option("--exclude", multiple=True, help="Globs to exclude, replacing the defaults.")
@click.option("--extend-exclude", multiple=True, help="Globs to exclude in addition to the defaults.")
@click.option("--torch-version", help='The torch version the code targets (e.g. "2.4"); newer deprecations are not reported.')
@click.option("--fix", is_flag=True, help="Apply safe fixes.")
@click.option("--unsafe-fixes", is_flag=True, help="Also apply (with --fix/--diff) or show unsafe fixes.")
@click.option("--diff", is_flag=True, help="Print the diff --fix would make; write nothing.")
@click.option("--force-exclude", is_flag=True, default=None,
              help="Apply the excludes to files named explicitly too (for pre-commit, which names every file).")
@click.option("--show-settings", is_flag=True, help="Print the resolved settings, where each came from, and exit.")
@click.option("--show-files", is_flag=True, help="Print the files that would be linted (and what the excludes skipped), and exit.")
@click.option("--fail-on", type=click.Choice(FAIL_LEVELS), default=None,
              help="Exit 1 only for findings at or above this severity (default: info, any finding); the others are still shown.")
@click.option("--add-noqa", is_flag=True, help="Add a `# torch-audit: ignore[CODE]` comment to every current finding.")
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path),
              help="Report only the findings this baseline file does not record.")
@click.option("--write-baseline", type=click.Path(dir_okay=False, path_type=Path),
              help="Record the current findings in this baseline file (JSON) and exit 0.")
@click.option("--stdin-filename", type=str, default=None,
              help="Read the source from standard input (PATHS absent or `-`) and lint it as this file: its "
                   "configuration, per-file-ignores and excludes apply; --fix prints the fixed source.")
@click.option("-v", "--verbose", is_flag=True, help="Name the configuration file; print tracebacks of internal errors.")
@click.option("-q", "--quiet", is_flag=True, help="Print findings only, no summary or notes.")
def lint(paths: tuple[str, ...], **opts: Any) -> None:
    """Check PATHS (default: the current directory) statically."""
    from torch_audit.lint.options import LintOptions, OptionsError

    try:
        options = LintOptions.from_command_line(paths, **opts)
    except OptionsError as exc:
        raise _fail(str(exc)) from None
    from torch_audit.lint import gc_paused

    with gc_paused():  # imports libcst
        from torch_audit.lint.command import run_lint

    sys.exit(run_lint(options))


@cli.command("rules")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.option("--kind", type=click.Choice(["static", "runtime"]), default=None)
def rules_command(fmt: str, kind: str | None) -> None:
    """List the rule catalogue."""
    import json

    from torch_audit.catalog import load_catalog
    from torch_audit.docs import rules_table

    catalog = load_catalog()
    rules = [r for r in catalog.rules if kind is None or r.kind == kind]
    if fmt == "json":
        data = [
            {
                "code": r.code,
                "name": r.name,
                "kind": r.kind,
                "severity": r.severity.value,
                "status": r.status,
                "opt_in": r.opt_in,
                "fixable": r.fixable,
                "summary": r.summary(),
                "options": {k: {"default": o.default, "help": o.help} for k, o in r.options.items()},
            }
            for r in rules
        ]
        click.echo(json.dumps(data, indent=2))
    elif fmt == "markdown":
        click.echo(rules_table(rules), nl=False)
    else:
        for r in rules:
            flags = []
            if r.status == "preview":
                flags.append("preview")
            if r.opt_in:
                flags.append("opt-in")
            if r.fixable != "never":
                flags.append("fix")
            suffix = f" [{', '.join(flags)}]" if flags else ""
            click.echo(f"{r.code}  {r.name:<40} {r.kind:<8} {r.severity.value:<8}{suffix}")


@cli.command("rule")
@click.argument("code_or_name")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text")
def rule_command(code_or_name: str, fmt: str) -> None:
    """Explain a rule: what it finds, why, how to fix it, with examples."""
    from torch_audit.catalog import load_catalog
    from torch_audit.docs import rule_page

    catalog = load_catalog()
    rule = catalog.get(code_or_name)
    if rule is None:
        hint = catalog.did_you_mean(code_or_name) or " (see `torch-audit rules`)"
        raise _fail(f"unknown rule {code_or_name!r}{hint}")
    click.echo(rule_page(rule, markdown=fmt == "markdown"), nl=False)


@cli.command("server")
def server_command() -> None:
    """Run the Language Server (LSP) on standard input/output, for editors."""
    try:
        from torch_audit.lsp import main as serve
    except ImportError as exc:
        raise _fail(f"the language server needs pygls ({exc}); install the server extra: "
                    "pip install 'torch-audit[server]'") from None
    serve()


def main(argv: list[str] | None = None, prog_name: str = "torch-audit") -> None:
    # A closed stdout (`torch-audit lint | head`) is not an error worth a traceback.
    try:
        cli.main(args=argv, prog_name=prog_name)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(EXIT_FINDINGS)
