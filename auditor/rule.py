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
    #: What to do about it, shown after the message.
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
        fix: Fix | None = None,
        **fmt: Any,
    ) -> None:
        text = message if message is not None else self.message.format(**fmt)
        self.ctx.add_finding(self, node, text, fix)

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
