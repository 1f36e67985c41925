"""``torch-audit lint``: configuration → discovery → engine → report → exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from torch_audit import __version__
from torch_audit.catalog import CatalogError, Layer, UnknownSelector, load_catalog
from torch_audit.config import Config, ConfigError, find_config, load_config, split_selectors
from torch_audit.findings import Finding
from torch_audit.output import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, OutputError, exit_code, message, write_report
from torch_audit.lint import gc_paused
from torch_audit.lint.discover import DEFAULT_EXCLUDES, PathNotFound, discover
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.runner import ProgressBar, default_jobs, lint_files

if TYPE_CHECKING:  # pragma: no cover
    import pathspec

#: Show a progress bar from this many files on, and only on a terminal.
PROGRESS_MIN_FILES = 300


def _err(message: str) -> None:
    click.echo(message, err=True)


def resolve_config(paths: list[str], config_file: Path | None, catalog) -> Config:
    path = config_file if config_file is not None else find_config(Path(paths[0]))
    return load_config(path, catalog)


def per_file_ignored(config: Config, catalog) -> list[tuple[pathspec.PathSpec, set[str]]]:
    out: list[tuple[pathspec.PathSpec, set[str]]] = []
    if not config.per_file_ignores:
        return out
    import pathspec  # only with per-file-ignores: it costs ~20 ms of start-up

    for glob, selectors in config.per_file_ignores.items():
        codes: set[str] = set()
        for s in selectors:
            codes |= catalog.match(s)
        out.append((pathspec.GitIgnoreSpec.from_lines([glob]), codes))
    return out


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _resolve_selection(paths: list[str], opts: dict[str, Any], catalog):
    config = resolve_config(paths, opts.get("config_file"), catalog)
    file_layer = Layer(config.select, config.ignore, config.extend_select)
    cli_layer = Layer(
        split_selectors(opts.get("select")) or None,  # an empty --select is no --select
        split_selectors(opts.get("ignore")),
        split_selectors(opts.get("extend_select")),
    )
    preview = opts.get("preview")
    preview = config.preview if preview is None else preview
    rules = catalog.resolve([file_layer, cli_layer], preview=preview, kind="static").rules
    return config, rules, per_file_ignored(config, catalog)


def _pfi_codes(pfi: list[tuple[pathspec.PathSpec, set[str]]], path: str, root: Path) -> frozenset[str]:
    """The codes per-file-ignores drop for ``path``."""
    if not pfi:
        return frozenset()
    rel = _relative(path, root)
    return frozenset(code for spec, codes in pfi if spec.match_file(rel) for code in codes)


def run_lint(paths: list[str], **opts: Any) -> int:
    # The static rules are enough to lint; the runtime ones are imported only when the
    # configuration or the command line names one of them (it saves start-up time).
    problem: Exception | None = None
    for kinds in (("static",), ("static", "runtime")):
        try:
            with gc_paused():  # imports the rule modules
                catalog = load_catalog(kinds)
            config, rules, pfi = _resolve_selection(paths, opts, catalog)
        except CatalogError as exc:
            _err(f"torch-audit: error: broken rule catalogue: {exc}")
            return EXIT_ERROR
        except (ConfigError, UnknownSelector) as exc:
            problem = exc
            continue
        problem = None
        break
    if problem is not None:
        _err(f"torch-audit: error: {problem}")
        return EXIT_ERROR

    torch_version = opts.get("torch_version")
    if torch_version is not None and torch_version != "latest":
        import re

        if not re.fullmatch(r"\d+\.\d+(\.\d+)?", torch_version):
            _err(f'torch-audit: error: --torch-version expects a version like "2.4", got {torch_version!r}')
            return EXIT_ERROR
    elif torch_version == "latest":
        torch_version = None
    else:
        torch_version = config.torch_version

    if opts.get("verbose"):
        if config.path is not None:
            _err(f"torch-audit: using configuration file {config.path}")
        else:
            _err(f"torch-audit: no configuration file found from {paths[0]} upwards; using the defaults")
    if opts.get("show_settings"):
        from torch_audit.lint.show import show_settings
        from torch_audit.output import write_output

        write_output(show_settings(config, opts, rules, torch_version, catalog), None)
        return EXIT_OK

    if opts.get("stdin_filename") is not None:
        from torch_audit.lint.stdin import run_stdin

        return run_stdin(opts["stdin_filename"], opts, config=config, catalog=catalog, rules=rules, pfi=pfi,
                         torch_version=torch_version)

    exclude = list(opts.get("exclude") or ()) or config.exclude
    try:
        found = discover(
            paths,
            exclude=exclude if exclude is not None else DEFAULT_EXCLUDES,
            extend_exclude=[*config.extend_exclude, *(opts.get("extend_exclude") or ())],
            root=config.root,
            respect_gitignore=config.respect_gitignore,
            force_exclude=bool(opts.get("force_exclude") or config.force_exclude),
        )
    except PathNotFound as exc:
        _err(f"torch-audit: error: {exc}")
        return EXIT_ERROR
    quiet = opts.get("quiet", False)
    for w in found.warnings:
        _err(f"torch-audit: warning: {w}")
    if opts.get("show_files"):
        from torch_audit.lint.show import show_files, skipped_lines
        from torch_audit.output import write_output

        write_output(show_files(found), None)
        for line in skipped_lines(found, config, opts):  # stderr: stdout stays a list of files
            _err(f"torch-audit: {line}")
        return EXIT_OK
    if not found.files:
        if not quiet:
            _err("torch-audit: note: no Python files found under " + ", ".join(paths))
        return EXIT_OK

    settings = LintSettings.of(rules, config, torch_version, verbose=bool(opts.get("verbose")))
    cache = None
    if not opts.get("no_cache"):
        from torch_audit.lint.cache import Cache  # hashing and JSON: not needed with --no-cache

        cache = Cache(config.root, settings.fingerprint(__version__))
    jobs = opts.get("jobs") or default_jobs()
    progress = None
    if len(found.files) >= PROGRESS_MIN_FILES and sys.stderr.isatty() and not quiet:
        progress = ProgressBar(len(found.files))
    try:
        results, read_warnings = lint_files(
            found.files, settings, jobs=jobs, cache=cache, on_progress=progress
        )
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (the runner's Terminated)
        if progress:
            progress.close()
        _err(f"torch-audit: {getattr(exc, 'message', 'interrupted')}")
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    if progress:
        progress.close()
    for w in read_warnings:
        _err(f"torch-audit: warning: {w}")

    findings: list[Finding] = []
    internal_errors = 0
    for result in results:
        internal_errors += result.internal_errors
        if not quiet:
            for note in result.notes:
                _err(f"torch-audit: note: {note}")
        if settings.verbose:
            for tb in result.tracebacks:
                _err(tb)
        kept = result.findings
        if pfi:
            rel = _relative(result.path, config.root)
            ignored: set[str] = set()
            for spec, codes in pfi:
                if spec.match_file(rel):
                    ignored |= codes
            kept = [f for f in kept if f.code not in ignored]
        findings.extend(kept)

    if opts.get("add_noqa"):
        from torch_audit.lint.add_noqa import add_noqa_command

        return add_noqa_command(results, settings, opts, ignored_for=lambda p: _pfi_codes(pfi, p, config.root))
    if opts.get("write_baseline") or opts.get("baseline"):
        from torch_audit.lint.baseline import apply_baseline_options

        findings, done = apply_baseline_options(findings, opts, root=config.root, relative=_relative)
        if done is not None:
            if done == EXIT_OK and internal_errors:  # the baseline lacks what the failing rules missed
                _err(f"torch-audit: error: {internal_errors} internal error(s); run with --verbose for tracebacks")
                return EXIT_ERROR
            return done

    if opts.get("fix") or opts.get("diff"):
        from torch_audit.lint.fixer import apply_fixes_command

        return apply_fixes_command(findings, results, settings, opts, config=config, catalog=catalog, named=paths)

    findings.sort(key=lambda f: f.sort_key)
    try:
        write_report(
            findings, opts.get("output_format") or "text", output_file=opts.get("output_file"),
            quiet=quiet, statistics=bool(opts.get("statistics")), catalog=catalog, root=config.root,
            files_checked=len(found.files), unsafe_fixes=bool(opts.get("unsafe_fixes")),
        )
    except OutputError as exc:
        message(str(exc), "error")
        return EXIT_ERROR
    return exit_code(findings, fail_on=opts.get("fail_on"), exit_zero=bool(opts.get("exit_zero")),
                     internal_errors=internal_errors, verbose=settings.verbose)
