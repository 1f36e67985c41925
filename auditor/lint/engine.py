"""Lint one file: decode → prefilter → parse once → one batched traversal → suppressions.

This module is the per-file floor of the pipeline; :mod:`torch_audit.lint.runner` spreads files
over processes and the cache. Nothing here imports torch or the code being read.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import tokenize
from typing import Any, Callable

import libcst as cst

from torch_audit.findings import Finding
from torch_audit.lint.context import FileContext
from torch_audit.lint.suppress import apply_suppressions, parse_suppressions
from torch_audit.lint.traverse import dispatch_table, walk
from torch_audit.rule import StaticRule

#: Files larger than this are skipped with a note. Hand-written Python files are far smaller
#: (the largest of the 6,000 corpus files is about 0.5 MB); bigger ones are generated code or data
#: dumped into .py files, and parsing them would take a minute each.
DEFAULT_MAX_FILE_BYTES = 2 * 1024 * 1024
#: libcst's code generation for positions recurses once per nesting level.
_RECURSION_LIMIT = 20_000


@dataclasses.dataclass
class LintSettings:
    """Everything that decides what a file's findings are (and so keys the cache)."""

    rules: list[type[StaticRule]]
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    torch_version: str | None = None
    verbose: bool = False
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    report_unused_suppressions: bool = False
    #: link the files into a project (see :mod:`torch_audit.lint.project`); False: each file alone
    whole_program: bool = True
    #: the whole-program model the files' facts consult (not part of the fingerprint: a cached
    #: result records which summaries it read, see :mod:`torch_audit.lint.project`)
    project: Any = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, rules: list[type[StaticRule]], config: Any, torch_version: str | None = None,
           verbose: bool = False) -> "LintSettings":
        """The settings a configuration gives the selected rules (unused suppressions are
        reported when their rule is selected)."""
        return cls(
            rules=rules,
            options=config.options,
            torch_version=torch_version,
            verbose=verbose,
            report_unused_suppressions=any(r.name == "unused-suppression" for r in rules),
        )

    @property
    def triggers(self) -> tuple[bytes, ...]:
        words: set[str] = set()
        for rule in self.rules:
            words.update(getattr(rule, "triggers", ("torch",)))
        return tuple(sorted(w.encode() for w in words))

    def fingerprint(self, version: str) -> str:
        import hashlib  # only with the cache (~4 ms of start-up)

        parts = [
            version,
            _code_stamp(),
            ",".join(f"{r.code}:{r.__module__}" for r in self.rules),
            repr(sorted((k, sorted(v.items())) for k, v in self.options.items())),
            str(self.torch_version),
            str(self.max_file_bytes),
            str(self.report_unused_suppressions),
            str(self.whole_program),
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _code_stamp() -> str:
    """Size and modification time of every loaded torch_audit module: editing a rule or the
    engine in a working tree (where the version does not change) starts a fresh cache."""
    import hashlib
    import os

    # the modules every lint imports on first use (the project model, the facts' bridge): a
    # stamp taken before they load would not cover them, and would change once they had
    import torch_audit.lint.facts.crossfile  # noqa: F401
    import torch_audit.lint.project.model  # noqa: F401

    stamps = []
    for name, module in sorted(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.startswith("torch_audit") and path:
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamps.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(stamps).encode()).hexdigest()


@dataclasses.dataclass
class FileResult:
    path: str
    findings: list[Finding] = dataclasses.field(default_factory=list)
    #: one-line notes for stderr (skipped files and why)
    notes: list[str] = dataclasses.field(default_factory=list)
    internal_errors: int = 0
    tracebacks: list[str] = dataclasses.field(default_factory=list)
    #: the file mentions none of the trigger words and was not parsed
    skipped: bool = False
    #: the result may be cached (not an I/O failure)
    cacheable: bool = True
    #: the other modules whose summaries the analysis read → their digests: a cached result is
    #: valid only while they are unchanged
    deps: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_cache(self) -> dict[str, Any]:
        return {
            "findings": [f.to_cache() for f in self.findings],
            "notes": self.notes,
            "skipped": self.skipped,
            "deps": self.deps,
        }

    @classmethod
    def from_cache(cls, path: str, data: dict[str, Any]) -> "FileResult":
        findings = []
        for item in data["findings"]:
            f = Finding.from_dict({**item, "path": path})
            findings.append(f)
        deps = data.get("deps") or {}
        if not isinstance(deps, dict) or not all(isinstance(v, str) for v in deps.values()):
            raise ValueError("not a cache entry of ours")
        return cls(path, findings, list(data.get("notes", [])), skipped=data.get("skipped", False), deps=deps)


def _engine_rule(name: str) -> type[StaticRule]:
    from torch_audit.lint.engine_findings import ENGINE_FINDINGS

    return next(r for r in ENGINE_FINDINGS if r.name == name)


def _engine_finding(name: str, path: str, line: int = 1, column: int = 1, **fmt: Any) -> Finding:
    rule = _engine_rule(name)
    return Finding(
        code=rule.code,
        name=rule.name,
        severity=rule.severity,
        message=rule.message.format(**fmt),
        path=path,
        line=max(1, line),
        column=max(1, column),
    )


def decode(data: bytes) -> tuple[str, str]:
    """Text and encoding of Python source bytes, honouring a PEP 263 cookie and a BOM.

    Raises ValueError with a one-line reason when the bytes are not readable source."""
    if b"\x00" in data:
        raise ValueError("file contains NUL bytes")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        raise ValueError(str(exc).split("(", 1)[0].strip() or "bad encoding declaration") from None
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise ValueError(f"cannot decode as {encoding}: {reason}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, encoding


def mentions_trigger(data: bytes, triggers: tuple[bytes, ...]) -> bool:
    return any(t in data for t in triggers)


def lint_python(path: str, data: bytes, settings: LintSettings) -> FileResult:
    """Lint the bytes of one Python file (:func:`torch_audit.lint.sources.lint_source` also
    takes notebooks)."""
    result = FileResult(path)
    if len(data) > settings.max_file_bytes:
        result.notes.append(
            f"{path}: skipped, {len(data) / 2**20:.1f} MB is over the {settings.max_file_bytes / 2**20:.0f} MB limit"
        )
        result.skipped = True
        return result
    if not mentions_trigger(data, settings.triggers):
        result.skipped = True
        return result
    try:
        source, _encoding = decode(data)
    except ValueError as exc:
        result.findings.append(_engine_finding("unreadable-file", path, reason=str(exc)))
        return result

    old_limit = sys.getrecursionlimit()
    if old_limit < _RECURSION_LIMIT:
        sys.setrecursionlimit(_RECURSION_LIMIT)
    try:
        return _lint_text(path, source, settings, result)
    except RecursionError:
        result.findings = []
        result.notes.append(f"{path}: skipped, nested too deeply to analyse")
        result.skipped = True
        return result
    finally:
        sys.setrecursionlimit(old_limit)


def _cpython_check(source: str, path: str) -> BaseException | None:
    """Compile with CPython's own parser first (AST only, a fraction of libcst's cost).

    It guards libcst's native parser, which can overflow the C stack on pathologically nested
    code that CPython itself refuses, and gives the most useful syntax-error locations."""
    return cpython_parse(source, path)[1]


def cpython_parse(source: str, path: str) -> tuple[Any, BaseException | None]:
    """CPython's AST of a file and the problem that stops libcst from reading it (a syntax error,
    nesting beyond :data:`_MAX_AST_DEPTH`), or None. The whole-program model summarises files
    from this tree, and then the engine need not compile them again."""
    import ast
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings are not ours to print
            tree = compile(source, path, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
        return None, exc
    if _ast_depth(tree, _MAX_AST_DEPTH) > _MAX_AST_DEPTH:
        return None, RecursionError(f"an expression nested more than {_MAX_AST_DEPTH} levels deep")
    return tree, None


#: Legal but pathological nesting (a 5,000-term ``a + b + ...`` chain, a 5,000-long attribute or
#: subscript chain): CPython accepts it without parentheses, but libcst's parser takes time that
#: grows faster than quadratically with the depth (0.2 s at 1,000 levels, 12 s at 4,000, minutes
#: beyond). Real code stays far below: the deepest of 19,500 files (the corpus, CPython's Lib/
#: and its site-packages) is 569 levels, a generated sympy table; typical files are 10-30.
_MAX_AST_DEPTH = 1000


def _ast_depth(tree: Any, limit: int) -> int:
    """Depth of an ``ast`` tree, iteratively; stops counting once past ``limit``.

    Exact up to the point where it matters: a subtree written on one line in ``n`` bytes is not
    walked when it could not reach ``limit`` even at two levels per byte (every level of an
    expression is written with at least one character: an operator, a bracket, a dot, a
    keyword; the context leaves and wrappers like ``keyword`` add at most one more). Most of a
    file is such short lines, so this visits a few statements instead of every node (walking
    every node was a tenth of linting a large file)."""
    import ast

    best = 0
    stack = [(tree, 1)]
    pop, push, node_type = stack.pop, stack.append, ast.AST
    while stack:
        node, depth = pop()
        if depth > best:
            best = depth
            if best > limit:
                return best
        end = getattr(node, "end_col_offset", None)
        if end is not None and node.lineno == node.end_lineno and depth + 2 * (end - node.col_offset) + 2 <= limit:
            continue  # short enough that no nesting inside it can reach the limit
        depth += 1
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, node_type):
                        push((item, depth))
            elif isinstance(value, node_type):
                push((value, depth))
    return best


#: CPython syntax errors about nesting limits: libcst must not be asked to parse such code.
_NESTING_LIMITS = ("too many nested", "too complex", "too many statically nested", "too many levels of indentation")


def _lint_text(path: str, source: str, settings: LintSettings, result: FileResult) -> FileResult:
    module = _parse(path, source, settings, result)
    if module is None:
        return result  # a syntax error reported, or a file skipped with a note
    ctx = FileContext(path, source, module, settings)
    project = settings.project
    if project is not None:
        project.reads.clear()
    rules = [r for r in settings.rules if not getattr(r, "engine", False)]
    failed: dict[str, BaseException] = {}
    try:
        _walk_rules(ctx, module, rules, failed, result)
        findings = [f for f in ctx.findings() if f.code not in failed]
    except RecursionError:
        raise
    except Exception as exc:
        import traceback  # only on a failure

        result.internal_errors += 1
        result.tracebacks.append(f"{path}: engine\n" + traceback.format_exc())
        result.findings.append(
            _engine_finding("internal-error", path, rule="the analysis engine", detail=_one_line(exc))
        )
        return result
    suppressions = parse_suppressions(source)
    findings = apply_suppressions(findings, suppressions)
    for code, exc in failed.items():
        rule = next(r for r in rules if r.code == code)
        result.internal_errors += 1
        result.findings.append(
            _engine_finding(
                "internal-error", path, rule=f"{rule.code} ({rule.name})", detail=_one_line(exc)
            )
        )
    if settings.report_unused_suppressions:
        result.findings.extend(_unused_suppressions(path, suppressions, settings))
    result.findings.extend(findings)
    result.findings.sort(key=lambda f: f.sort_key)
    if project is not None:
        result.deps = project.stamps(exclude=project.module_of(path))
    return result


def _parse(path: str, source: str, settings: LintSettings, result: FileResult) -> cst.Module | None:
    """The libcst tree of a source, or None after adding the syntax error (or the note of a
    file skipped) to ``result``. CPython checks the source first (see :func:`cpython_parse`)."""
    project = settings.project
    # the project compiled (and summarised) this very source already: no second CPython parse
    problem = None if project is not None and project.compiled(path, source) else _cpython_check(source, path)
    if isinstance(problem, (RecursionError, MemoryError)):
        raise RecursionError
    if isinstance(problem, SyntaxError) and any(m in (problem.msg or "") for m in _NESTING_LIMITS):
        result.findings.append(
            _engine_finding(
                "syntax-error", path, line=problem.lineno or 1, column=problem.offset or 1, detail=problem.msg
            )
        )
        return None
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        if problem is None:
            # CPython compiled it: valid Python that libcst cannot read (for example a few
            # thousand implicitly concatenated strings). Not the user's syntax error.
            detail = str(exc.message).strip().splitlines()[0] if exc.message else "parser error"
            result.notes.append(f"{path}: skipped, valid Python the parser cannot read ({detail.removeprefix('parser error: ')})")
            result.skipped = True
            return None
        if isinstance(problem, SyntaxError):
            line, column, detail = problem.lineno or 1, problem.offset or 1, problem.msg or "invalid syntax"
        else:
            line, column = exc.editor_line, exc.editor_column
            detail = str(exc.message).strip().splitlines()[0] if exc.message else "invalid syntax"
            detail = detail.removeprefix("parser error: ")
        result.findings.append(_engine_finding("syntax-error", path, line=line, column=column, detail=detail))
        return None
    except (RecursionError, MemoryError):
        raise RecursionError
    except Exception as exc:  # libcst's native parser can fail in other ways on odd input
        result.findings.append(
            _engine_finding("syntax-error", path, detail=f"{type(exc).__name__}: {exc}".splitlines()[0])
        )
        return None
    # (a CPython SyntaxError with a libcst parse that succeeds is newer syntax than this
    # interpreter knows, such as PEP 695 generics on Python 3.11: it is linted)


def _walk_rules(ctx: FileContext, module: cst.Module, rules: list, failed: dict[str, BaseException],
                result: FileResult) -> None:
    """One walk of the tree with the facts' indexer and every rule. A rule that raises is
    recorded in ``failed`` (with its traceback in ``result``) and silenced for the rest of the
    walk; the others go on."""
    path = ctx.path

    def guarded(rule: StaticRule, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(node: Any) -> Any:
            if rule.code in failed:
                return None
            try:
                return fn(node)
            except RecursionError:
                raise
            except Exception as exc:  # a rule bug must not stop the other rules
                import traceback  # only on a failure

                failed[rule.code] = exc
                result.tracebacks.append(
                    f"{path}: {rule.code} {rule.name}\n" + traceback.format_exc()
                )
                return None

        return run

    instances = [r(ctx, ctx.settings.options.get(r.name)) for r in rules]
    visit: dict[type, list] = dispatch_table([ctx.indexer], "visit_")
    leave: dict[type, list] = {}
    for inst in instances:
        for node_type, handlers in dispatch_table([inst], "visit_").items():
            visit.setdefault(node_type, []).extend(guarded(inst, h) for h in handlers)
        for node_type, handlers in dispatch_table([inst], "leave_").items():
            leave.setdefault(node_type, []).extend(guarded(inst, h) for h in handlers)
    for node_type, handlers in dispatch_table([ctx.indexer], "leave_").items():
        leave.setdefault(node_type, []).extend(handlers)  # facts leave after the rules
    walk(module, [visit, leave], ctx.stack)


def _unused_suppressions(path: str, suppressions: list, settings: LintSettings) -> list[Finding]:
    """A suppression comment that silenced nothing, for a rule that ran."""
    enabled = {r.code for r in settings.rules} | {r.name for r in settings.rules}
    rule = _engine_rule("unused-suppression")
    out = []
    for s in suppressions:
        if s.used or s.kind == "ignore-file":
            continue
        if "*" not in s.selectors and not any(sel in enabled for sel in s.selectors):
            continue  # cannot know: the rule did not run
        out.append(
            Finding(
                code=rule.code,
                name=rule.name,
                severity=rule.severity,
                message=rule.message.format(codes="everything" if "*" in s.selectors else ", ".join(s.selectors)),
                path=path,
                line=s.line,
                column=s.column,
            )
        )
    return out


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
