"""The shape of a rule: metadata, options and documentation shared by static and runtime rules.

A rule module in ``torch_audit.rules.static`` or ``torch_audit.rules.runtime`` defines exactly one
subclass of :class:`StaticRule` or :class:`RuntimeCheck` (runtime side, see
``torch_audit.runtime.check``). The catalogue finds it; nothing needs registering.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import TYPE_CHECKING, Any, ClassVar

from torch_audit.findings import Applicability, Edit, Fix, Severity

if TYPE_CHECKING:  # pragma: no cover
    import libcst as cst

    from torch_audit.lint.context import FileContext


DOC_SECTIONS = ("What it does", "Why is this bad?", "Known problems", "Fix safety", "References")
REQUIRED_DOC_SECTIONS = ("What it does", "Why is this bad?", "References")
_KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_CODE = re.compile(r"^TA[0-9]{3}$")


@dataclasses.dataclass(frozen=True)
class Option:
    """A per-rule setting, configurable as ``[tool.torch-audit.rules.<name>]``."""

    default: Any
    help: str
    type: type | tuple[type, ...] | None = None

    def check(self, rule: str, key: str, value: Any) -> Any:
        expected = self.type or type(self.default)
        # bool is an int in Python; do not let `true` pass for a number or vice versa.
        numeric = expected in (int, float) or expected == (int, float)
        if isinstance(value, bool) and (numeric or expected is not bool):
            raise TypeError(f"option {key!r} of rule {rule!r} expects {_tname(expected)}, got {value!r}")
        if expected is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, expected):
            raise TypeError(f"option {key!r} of rule {rule!r} expects {_tname(expected)}, got {value!r}")
        return value


class _Missing:
    """Stands for a field a report did not pass: formats as ``<name>``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __format__(self, spec: str) -> str:
        return f"<{self.name}>"

    def __str__(self) -> str:
        return f"<{self.name}>"

    __repr__ = __str__

    def __getattr__(self, attr: str) -> "_Missing":
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self.name}.{attr}")

    def __getitem__(self, key: Any) -> "_Missing":
        return _Missing(f"{self.name}[{key}]")


class _Fields(dict):
    def __missing__(self, key: str) -> _Missing:
        return _Missing(key)


def readable_fix_title(title: str) -> str:
    """A fix title for reading without a finding: ``{sampler}`` becomes ``<sampler>``."""
    import string

    try:
        parts = list(string.Formatter().parse(title))
    except ValueError:  # unbalanced braces: show it as written
        return title
    out = []
    for literal, field, _spec, _conversion in parts:
        out.append(literal)
        if field is not None:
            out.append(f"<{field or '...'}>")
    return "".join(out)


def format_fix_title(title: str | None, fields: dict[str, Any]) -> str | None:
    """``title`` formatted with ``fields``; never raises. A field the report did not pass shows
    as ``<name>``; a title that cannot be formatted at all is shown readably as written."""
    if not title:
        return None
    try:
        return title.format_map(_Fields(fields))
    except Exception:  # a positional field, a bad format spec, a failing __format__
        return readable_fix_title(title)


def _tname(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__


class Rule:
    """Metadata common to every rule. Subclasses set the class attributes."""

    code: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity] = Severity.WARNING
    #: What is wrong, with ``{placeholders}`` filled from ``report(**kwargs)``.
    message: ClassVar[str]
    #: What to do about it, with the same ``{placeholders}`` as :attr:`message`: the finding's
    #: ``help`` (a ``help:`` line in ``--output-format full``, ``help`` in JSON).
    fix_title: ClassVar[str | None] = None
    #: ``stable`` rules run by default; ``preview`` rules only with ``--preview``/``preview = true``.
    status: ClassVar[str] = "stable"
    #: ``never``, ``sometimes`` or ``always``.
    fixable: ClassVar[str] = "never"
    #: ``static`` or ``runtime``.
    kind: ClassVar[str] = "static"
    #: Off unless selected explicitly (noisy or opinionated rules), like TorchFix's opt-in set.
    opt_in: ClassVar[bool] = False
    options: ClassVar[dict[str, Option]] = {}

    @classmethod
    def summary(cls) -> str:
        """The first sentence of 'What it does'."""
        what = cls.doc_sections().get("What it does", "").strip()
        first = re.split(r"(?<=[.!?])\s", what.replace("\n", " "), maxsplit=1)[0]
        return first.strip()

    @classmethod
    def format_help(cls, fields: dict[str, Any]) -> str | None:
        """:attr:`fix_title` formatted with a report's ``fields`` (see :func:`format_fix_title`)."""
        return format_fix_title(cls.fix_title, fields)

    @classmethod
    def docstring(cls) -> str:
        """The rule's documentation: its class docstring. A rule whose documentation includes
        generated text (the deprecation-table rules list the table) overrides this, so that the
        text is generated only when the documentation is read, not at every start-up."""
        return cls.__doc__ or ""

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """The docstring split into its ``## Section`` parts, in order."""
        doc = inspect.cleandoc(cls.docstring())
        sections: dict[str, str] = {}
        current: str | None = None
        lines: list[str] = []
        for line in doc.splitlines():
            m = re.match(r"^##\s+(.+?)\s*$", line)
            if m:
                if current is not None:
                    sections[current] = "\n".join(lines).strip()
                current, lines = m.group(1), []
            elif current is not None:
                lines.append(line)
        if current is not None:
            sections[current] = "\n".join(lines).strip()
        return sections

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {k: o.default for k, o in cls.options.items()}

    @classmethod
    def declaration_problems(cls) -> list[str]:
        """What is wrong with the attributes selection relies on (checked by the catalogue at
        every start-up, so it stays cheap)."""
        problems = []
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not _CODE.match(getattr(cls, "code", "")):
            problems.append(f"{where}: code must look like TA123")
        if not _KEBAB.match(getattr(cls, "name", "")):
            problems.append(f"{where}: name must be kebab-case")
        if not getattr(cls, "message", ""):
            problems.append(f"{where}: message is empty")
        if cls.status not in ("stable", "preview"):
            problems.append(f"{where}: status must be 'stable' or 'preview'")
        if cls.fixable not in ("never", "sometimes", "always"):
            problems.append(f"{where}: fixable must be never/sometimes/always")
        return problems

    @classmethod
    def metadata_problems(cls) -> list[str]:
        """Everything wrong with this rule's declaration, documentation included (the
        meta-tests check every rule; the documentation is not parsed at start-up)."""
        problems = cls.declaration_problems()
        where = f"{cls.__module__}.{cls.__qualname__}"
        sections = cls.doc_sections()
        for required in REQUIRED_DOC_SECTIONS:
            if not sections.get(required):
                problems.append(f"{where}: docstring lacks '## {required}'")
        if cls.fixable != "never" and not sections.get("Fix safety"):
            problems.append(f"{where}: fixable rule lacks '## Fix safety'")
        order = [s for s in sections if s in DOC_SECTIONS]
        if order != sorted(order, key=DOC_SECTIONS.index):
            problems.append(f"{where}: doc sections out of order {order}")
        unknown = [s for s in sections if s not in DOC_SECTIONS]
        if unknown:
            problems.append(f"{where}: unknown doc sections {unknown}")
        return problems


class StaticRule(Rule):
    """A libcst-based rule. Define ``visit_<Node>``/``leave_<Node>`` methods; the engine calls
    them during its single traversal of each file. Ask ``self.ctx`` (a
    :class:`~torch_audit.lint.context.FileContext`) for the shared facts: qualified names,
    value provenance, module structure, grad-mode context, training events per loop.

    Report with :meth:`report`. Selection, suppression and formatting are the engine's job.
    """

    kind: ClassVar[str] = "static"

    def __init__(self, ctx: "FileContext", options: dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.opts: dict[str, Any] = {**self.default_options(), **(options or {})}

    def report(
        self,
        node: "cst.CSTNode",
        *,
        message: str | None = None,
        help: str | None = None,
        fix: Fix | None = None,
        related: tuple[tuple[str, int, str], ...] = (),
        **fmt: Any,
    ) -> None:
        """Report ``node``: :attr:`message` and :attr:`fix_title` formatted with ``fmt``.

        A second pattern of the same rule passes its own ``message`` (and ``help`` when the
        fix title does not fit it). ``related`` are the places beyond the reported line that
        the finding rests on (``facts.layers.related_locations(source)``)."""
        text = message if message is not None else self.message.format(**fmt)
        hint = help if help is not None else self.format_help(fmt)
        self.ctx.add_finding(self, node, text, fix, help=hint, related=related)

    # -- fix helpers -------------------------------------------------------------------------
    def replace(
        self,
        node: "cst.CSTNode",
        new: "cst.CSTNode | str",
        description: str,
        applicability: Applicability = Applicability.SAFE,
    ) -> Fix:
        """A fix that replaces ``node``'s source with ``new`` (a node or source text)."""
        return Fix(description, applicability, (self.ctx.edit_replacing(node, new),))

    def fix_from_edits(
        self, description: str, applicability: Applicability, edits: list[Edit]
    ) -> Fix:
        return Fix(description, applicability, tuple(edits))
