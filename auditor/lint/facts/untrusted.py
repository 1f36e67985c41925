"""Where does a file path or URL come from? Values that enter from outside the program.

``untrusted_source(ctx, expr, scope, at)`` names the outside origin of a value (a command-line
argument, user input, a download, a URL) when the code shows it: through assignments, tuple
unpacking, attributes of an ``argparse`` namespace, subscripts, f-strings, string concatenation
and path-building calls (``os.path.join``, ``Path``, ``open``, ``io.BytesIO``). A function
parameter is not an outside origin (the caller decides); anything else unknown is not either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import libcst as cst

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext
    from torch_audit.lint.facts.index import Scope

#: calls whose result comes from outside the program, with how to say so
UNTRUSTED_CALLS = {
    "input": "user input",
    "urllib.request.urlopen": "a download (urllib.request.urlopen)",
    "urllib.request.urlretrieve": "a download (urllib.request.urlretrieve)",
    "requests.get": "a download (requests.get)",
    "requests.post": "a download (requests.post)",
    "httpx.get": "a download (httpx.get)",
    "huggingface_hub.hf_hub_download": "a download (hf_hub_download)",
    "huggingface_hub.file_download.hf_hub_download": "a download (hf_hub_download)",
    "huggingface_hub.cached_download": "a download (cached_download)",
    "gdown.download": "a download (gdown.download)",
    "wget.download": "a download (wget.download)",
    "torch.hub.download_url_to_file": "a download (torch.hub.download_url_to_file)",
}
#: ``sys.argv`` and friends
UNTRUSTED_NAMES = {"sys.argv": "a command-line argument (sys.argv)"}
#: methods whose result holds command-line arguments
ARGPARSE_METHODS = frozenset({"parse_args", "parse_known_args", "parse_intermixed_args"})
#: calls that build a path, a file or a buffer from their arguments
PATH_BUILDERS = frozenset(
    {
        "os.path.join", "os.path.abspath", "os.path.expanduser", "os.path.realpath",
        "os.path.normpath", "os.fspath", "str", "open", "io.BytesIO", "pathlib.Path",
        "pathlib.PurePath", "io.open", "fsspec.open",
    }
)
PATH_METHODS = frozenset({"joinpath", "with_suffix", "with_name", "resolve", "expanduser", "absolute", "format", "read", "strip"})
_MAX_DEPTH = 10


def untrusted_source(ctx: "FileContext", expr: cst.BaseExpression | None, scope: "Scope", at: int,
                     _depth: int = 0) -> str | None:
    """How ``expr``'s value enters from outside the program, or None when the code does not
    show that."""
    if expr is None or _depth > _MAX_DEPTH:
        return None
    d = _depth + 1
    if isinstance(expr, cst.SimpleString):
        value = expr.evaluated_value
        return "a URL" if isinstance(value, str) and value.startswith(("http://", "https://")) else None
    if isinstance(expr, (cst.ConcatenatedString, cst.BinaryOperation)):
        return untrusted_source(ctx, expr.left, scope, at, d) or untrusted_source(ctx, expr.right, scope, at, d)
    if isinstance(expr, cst.FormattedString):
        return _formatted(ctx, expr, scope, at, d)
    if isinstance(expr, cst.Name):
        a = ctx.dataflow.reaching(expr.value, scope, at)
        if a is None or a.stmt is None or a.value is None:
            return None
        if a.kind in ("assign", "walrus", "unpack", "for", "with"):
            return untrusted_source(ctx, a.value, a.stmt.scope, a.index, d)
        return None
    if isinstance(expr, cst.Attribute):
        return _attribute(ctx, expr, scope, at, d)
    if isinstance(expr, cst.Subscript):
        return untrusted_source(ctx, expr.value, scope, at, d)
    if isinstance(expr, cst.Call):
        return _call(ctx, expr, scope, at, d)
    return None


def _first(ctx: "FileContext", parts: list[cst.BaseExpression], scope: "Scope", at: int, depth: int) -> str | None:
    for p in parts:
        found = untrusted_source(ctx, p, scope, at, depth)
        if found:
            return found
    return None


def _formatted(ctx: "FileContext", expr: cst.FormattedString, scope: "Scope", at: int, depth: int) -> str | None:
    """An f-string: a URL when it starts with a scheme, else the origin of a formatted value."""
    for i, part in enumerate(expr.parts):
        if isinstance(part, cst.FormattedStringText) and i == 0 and part.value.startswith(("http://", "https://")):
            return "a URL"
        if isinstance(part, cst.FormattedStringExpression):
            found = untrusted_source(ctx, part.expression, scope, at, depth)
            if found:
                return found
    return None


def _attribute(ctx: "FileContext", expr: cst.Attribute, scope: "Scope", at: int, depth: int) -> str | None:
    """``sys.argv``, or an attribute of an untrusted value (``args.path`` of ``parse_args()``)."""
    q = scope.qualname(expr)
    if q in UNTRUSTED_NAMES:
        return UNTRUSTED_NAMES[q]
    base = untrusted_source(ctx, expr.value, scope, at, depth)
    if base is not None and base.startswith("a command-line argument") and "(" not in base:
        return f"a command-line argument ({ctx.code(expr)})"
    return base


def _call(ctx: "FileContext", expr: cst.Call, scope: "Scope", at: int, depth: int) -> str | None:
    """A download or input call, an argparse result, or a path built from an untrusted part."""
    q = scope.qualname(expr.func)
    if q is None and isinstance(expr.func, cst.Name) and scope.lookup_scope(expr.func.value) is None:
        q = expr.func.value  # a builtin: input, open, str
    if q in UNTRUSTED_CALLS:
        return UNTRUSTED_CALLS[q]
    method = expr.func.attr.value if isinstance(expr.func, cst.Attribute) else None
    if method in ARGPARSE_METHODS:
        return "a command-line argument"
    if q in PATH_BUILDERS or (q is None and method in PATH_METHODS):
        parts: list[cst.BaseExpression] = [a.value for a in expr.args]
        if q is None and isinstance(expr.func, cst.Attribute):
            parts.insert(0, expr.func.value)
        return _first(ctx, parts, scope, at, depth)
    return None
