"""The one finding type shared by the linter and the runtime auditor."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class Severity(str, enum.Enum):
    """How bad a finding is. Ordered: ``info < warning < error``."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @classmethod
    def parse(cls, value: "str | Severity") -> "Severity":
        try:
            return cls(str(getattr(value, "value", value)).lower())
        except ValueError:
            raise ValueError(
                f"unknown severity {value!r} (expected one of: error, warning, info)"
            ) from None


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


class Applicability(str, enum.Enum):
    """Ruff's fix applicability: safe fixes keep the program's meaning (or only remove a
    certain bug); unsafe fixes may change behaviour a user relies on."""

    SAFE = "safe"
    UNSAFE = "unsafe"


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace the source between two 1-based (line, column) positions with ``content``.

    Columns count characters, the end is exclusive, as in libcst's code ranges."""

    start_line: int
    start_column: int
    end_line: int
    end_column: int
    content: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Fix:
    description: str
    applicability: Applicability
    edits: tuple[Edit, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "applicability": self.applicability.value,
            "edits": [e.to_dict() for e in self.edits],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Fix":
        return cls(
            description=data["description"],
            applicability=Applicability(data["applicability"]),
            edits=tuple(Edit(**e) for e in data.get("edits", ())),
        )


@dataclasses.dataclass
class Finding:
    """One problem, from the linter or from the runtime auditor.

    Positions are 1-based; ``end_column`` is exclusive. Runtime findings also carry the
    qualified ``module`` name, the first ``step`` it was seen at, how often it recurred
    (``count``), the measured ``value`` and, under torch.distributed, the ``rank``.

    ``help`` is what to do about it: the rule's ``fix_title`` formatted with the fields of the
    message (Ruff's ``help:`` line), or ``None`` when the rule has none."""

    code: str
    name: str
    severity: Severity
    message: str
    path: str = ""
    line: int = 1
    column: int = 1
    end_line: int | None = None
    end_column: int | None = None
    fix: Fix | None = None
    # runtime-only
    module: str | None = None
    step: int | None = None
    count: int = 1
    value: float | str | None = None
    rank: int | None = None
    # notebooks only: the 1-based cell (line and column are then relative to the cell)
    cell: int | None = None
    # not serialised: the lines of the statement that carries the finding, for suppressions
    statement_lines: tuple[int, int] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    # last, so that positional construction keeps working
    help: str | None = None
    #: where the evidence lies beyond the reported line (another file's softmax, the call site
    #: a finding rests on): (path, line, what is there); SARIF's relatedLocations
    related: tuple[tuple[str, int, str], ...] = ()
    #: notebooks only: (line, column, end line, end column) in the ``.ipynb`` file itself, for
    #: the formats whose consumers show the raw file (SARIF, GitHub, GitLab). Computed when the
    #: notebook is linted, so that reporters never read files; cached, not in ``to_dict``.
    raw_region: tuple[int, int, int, int] | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.severity = Severity.parse(self.severity)
        if self.end_line is None:
            self.end_line = self.line
        if self.end_column is None:
            self.end_column = self.column

    def runtime_facts(self) -> list[tuple[str, Any]]:
        """The runtime facts worth showing, in display order, for the renderers to label:
        ``module``, ``step``, ``count`` (only above one), ``value`` and ``rank`` when known."""
        facts = [("module", self.module or None), ("step", self.step),
                 ("count", self.count if self.count > 1 else None), ("value", self.value),
                 ("rank", self.rank)]
        return [(key, value) for key, value in facts if value is not None]

    @property
    def sort_key(self) -> tuple:
        return (self.path, self.cell or 0, self.line, self.column, self.code, self.message)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "name": self.name,
            "severity": self.severity.value,
            "message": self.message,
            "help": self.help,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "fix": self.fix.to_dict() if self.fix else None,
        }
        if self.cell is not None:
            data["cell"] = self.cell
        if self.related:
            data["related"] = [{"path": p, "line": n, "message": m} for p, n, m in self.related]
        if self.module is not None or self.step is not None:
            data.update(
                module=self.module,
                step=self.step,
                count=self.count,
                value=self.value,
            )
            if self.rank is not None:
                data["rank"] = self.rank
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Finding":
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        if kwargs.get("fix") is not None:
            kwargs["fix"] = Fix.from_dict(kwargs["fix"])
        if kwargs.get("statement_lines") is not None:
            kwargs["statement_lines"] = tuple(kwargs["statement_lines"])
        if kwargs.get("raw_region") is not None:
            kwargs["raw_region"] = tuple(kwargs["raw_region"])
        if kwargs.get("related"):
            kwargs["related"] = tuple((r["path"], r["line"], r["message"]) for r in kwargs["related"])
        return cls(**kwargs)

    def to_cache(self) -> dict[str, Any]:
        data = self.to_dict()
        data["statement_lines"] = list(self.statement_lines) if self.statement_lines else None
        if self.raw_region is not None:
            data["raw_region"] = list(self.raw_region)
        return data
