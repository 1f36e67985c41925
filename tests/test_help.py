"""A finding's ``help``: the rule's ``fix_title`` formatted with the fields of its message, and
where each output shows it (json ``help``, ``--output-format full``, sarif, github, the rule
page). The plain ``text`` format never shows it."""

from __future__ import annotations

import json
import os
import re
import string
import textwrap
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from harness import FIXTURES, fixture_dir, lint_fixture, static_rules, with_defaults
from torch_audit.catalog import Catalog, load_catalog
from torch_audit.cli import cli
from torch_audit.docs import rule_page
from torch_audit.findings import Finding, Severity
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.sources import lint_source
from torch_audit.report import render, sarif_log
from torch_audit.rule import StaticRule, format_fix_title, readable_fix_title

SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "sarif-schema-2.1.0.json"  # vendored: tests/data/README.md

FORWARD = textwrap.dedent(
    """\
    import torch.nn as nn

    model = nn.Linear(2, 2)
    y = model.forward(x)
    """
)


# -- formatting ----------------------------------------------------------------------------------


def test_fix_title_is_formatted_with_the_fields():
    assert format_fix_title("Call `{sampler}.set_epoch(epoch)`", {"sampler": "s"}) == "Call `s.set_epoch(epoch)`"
    assert format_fix_title("Plain advice", {"unused": 1}) == "Plain advice"
    assert format_fix_title("{{literal}} {a}", {"a": 1}) == "{literal} 1"
    assert format_fix_title(None, {"a": 1}) is None
    assert format_fix_title("", {}) is None


@pytest.mark.parametrize(
    "title,fields,expected",
    [
        ("Call `{sampler}.set_epoch(epoch)`", {}, "Call `<sampler>.set_epoch(epoch)`"),
        ("`{obj} = {text}`", {"text": "x.cuda()"}, "`<obj> = x.cuda()`"),  # the fields it has
        ("{a.b} {c[0]} {d!r:>4}", {}, "<a.b> <c[0]>  <d>"),
        ("positional {} {0}", {}, "positional <...> <0>"),
        ("bad spec {n:d}", {"n": "text"}, "bad spec <n>"),
        ("unbalanced {", {}, "unbalanced {"),
    ],
)
def test_missing_or_unformattable_fields_never_raise(title, fields, expected):
    assert format_fix_title(title, fields) == expected


def test_a_failing_field_never_raises():
    class Boom:
        def __format__(self, spec):
            raise RuntimeError("boom")

    assert format_fix_title("use {x}", {"x": Boom()}) == "use <x>"


def test_readable_fix_title():
    assert readable_fix_title("Iterate over `{fixed}` instead") == "Iterate over `<fixed>` instead"
    assert readable_fix_title("no fields") == "no fields"


# -- static rules --------------------------------------------------------------------------------


def _lint(tmp_path, source, rules):
    path = tmp_path / "m.py"
    path.write_text(source)
    return lint_source(str(path), path.read_bytes(), LintSettings(rules=list(rules)))


def test_a_static_finding_carries_its_formatted_help(tmp_path):
    rule = load_catalog()["forward-called-directly"]
    [f] = _lint(tmp_path, FORWARD, [rule]).findings
    assert f.code == rule.code
    assert f.help == "Call the module itself: `model(...)`"


class _Probe(StaticRule):
    """## What it does
    Reports every call, to test ``report``.

    ## Why is this bad?
    It is not.

    ## References
    - none
    """

    code = "TA998"
    name = "probe"
    severity = Severity.INFO
    message = "call of `{callee}`"
    fix_title = "Replace `{callee}` with `{replacement}`"
    triggers = ("(",)

    def visit_Call(self, node):
        callee = self.ctx.code(node.func)
        if callee == "explicit":
            self.report(node, message="another pattern", help="Do the other thing to `explicit`")
        elif callee == "fields":
            self.report(node, callee=callee, replacement="better")
        else:
            self.report(node, callee=callee)  # `replacement` missing: no crash


def test_report_formats_help_takes_an_explicit_one_and_survives_missing_fields(tmp_path):
    result = _lint(tmp_path, "fields()\nexplicit()\nmissing()\n", [_Probe])
    assert result.internal_errors == 0, result.tracebacks
    helps = {f.line: (f.message, f.help) for f in result.findings}
    assert helps == {
        1: ("call of `fields`", "Replace `fields` with `better`"),
        2: ("another pattern", "Do the other thing to `explicit`"),
        3: ("call of `missing`", "Replace `missing` with `<replacement>`"),
    }


def _placeholders(title: str) -> set[str]:
    return {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(title) if field}


BAD_FIXTURES = [
    pytest.param(rule, path, id=f"{rule.code}/{path.name}")
    for rule in static_rules()
    if fixture_dir(rule).is_dir()
    for path in sorted(fixture_dir(rule).glob("bad*.py"))
]


@pytest.mark.parametrize("rule,path", BAD_FIXTURES)
def test_every_fix_title_formats_with_the_fields_its_reports_pass(rule, path):
    """Meta-test: no finding of the bad fixtures shows a placeholder its report did not fill."""
    result = lint_fixture(path, with_defaults(rule))
    assert result.internal_errors == 0, result.tracebacks
    mine = [f for f in result.findings if f.code == rule.code]
    assert mine, f"{path} gives no {rule.code} finding"
    for f in mine:
        if rule.fix_title is None:
            assert f.help is None
            continue
        assert f.help, f"{path.name}:{f.line}: {rule.code} has a fix_title but no help"
        assert not re.search(r"\{[A-Za-z_0-9]*[}!:.\[]", f.help), f"unformatted field in {f.help!r}"
        unfilled = [name for name in _placeholders(rule.fix_title) if f"<{name}>" in f.help]
        assert not unfilled, f"{path.name}:{f.line}: {rule.code} help {f.help!r} lacks {unfilled}"


# -- the finding, json and the cache -------------------------------------------------------------


def test_finding_help_round_trips_and_old_dicts_still_load():
    f = Finding("TA101", "x", "error", "msg", path="a.py", help="do this")
    data = f.to_dict()
    assert list(data)[:5] == ["code", "name", "severity", "message", "help"]
    assert Finding.from_dict(data) == f
    assert Finding.from_dict(f.to_cache()).help == "do this"
    old = {k: v for k, v in data.items() if k != "help"}  # a cache entry written before `help`
    assert Finding.from_dict(old).help is None
    # positional construction is unchanged: help is the last field
    assert Finding("TA1", "n", "error", "m", "p.py", 2, 3).line == 2


def _finding(**kw):
    base = dict(code="TA101", name="softmax-before-cross-entropy", severity="error", message="msg",
                path="pkg/train.py", line=3, column=20)
    return Finding(**{**base, **kw})


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_json_help_key_after_message(in_tmp):
    data = json.loads(render([_finding(help="Pass the logits"), _finding(line=9)], "json"))
    assert [list(d)[3:5] for d in data] == [["message", "help"]] * 2
    assert [d["help"] for d in data] == ["Pass the logits", None]


# -- text and full -------------------------------------------------------------------------------


def test_text_default_never_shows_help(in_tmp):
    with_help = render([_finding(help="Pass the logits")], "text")
    assert with_help == render([_finding()], "text")
    assert with_help.splitlines() == [
        "pkg/train.py:3:20: TA101 msg",
        "Found 1 finding (1 error, 0 warnings, 0 info).",
    ]


def test_full_shows_a_help_line_under_each_finding_that_has_one(in_tmp):
    findings = [
        _finding(help="Pass the logits"),
        _finding(line=9, column=1),
        _finding(path="", module="enc", step=2, help="Lower the learning rate\nor clip"),
    ]
    # pkg/train.py does not exist here: no source frame, the help alone (frames: tests/test_formats.py)
    assert render(findings, "full").splitlines() == [
        "TA101 msg (module: enc, step: 2)",
        "  = help: Lower the learning rate",
        "          or clip",
        "",
        "pkg/train.py:3:20: TA101 msg",
        "  = help: Pass the logits",
        "",
        "pkg/train.py:9:1: TA101 msg",
        "",
        "Found 3 findings (3 errors, 0 warnings, 0 info).",
    ]
    coloured = render(findings[:1], "full", color=True).splitlines()
    assert coloured[1] == "  = \x1b[1m\x1b[36mhelp\x1b[0m: Pass the logits"
    assert render([], "full") == render([], "text") == "All checks passed!\n"


def test_without_summary_only_the_findings_remain(in_tmp):
    assert render([_finding(help="h")], "full", summary=False) == "pkg/train.py:3:20: TA101 msg\n  = help: h\n\n"
    assert render([_finding(help="h")], "text", summary=False) == "pkg/train.py:3:20: TA101 msg\n"
    assert render([], "text", summary=False) == ""


# -- github, sarif, html -------------------------------------------------------------------------


def test_github_annotation_ends_with_the_help(in_tmp):
    line = render([_finding(help="Pass the logits, 100%")], "github")
    assert line.endswith("::msg%0Ahelp: Pass the logits, 100%25\n")
    assert render([_finding()], "github").endswith("::msg\n")


@pytest.fixture(scope="module")
def sarif_validator():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_sarif_carries_the_help_and_stays_valid(in_tmp, sarif_validator):
    rule = load_catalog()["distributed-sampler-set-epoch-missing"]
    findings = [
        _finding(code=rule.code, name=rule.name, severity="warning", message="m",
                 help="Call `sampler.set_epoch(epoch)` at the start of each epoch"),
        _finding(code=rule.code, name=rule.name, severity="warning", message="m", line=30),
        _finding(code="TA701", name="nonfinite-loss", path="", module="m", step=1, help="Look"),
        _finding(cell=2, help="In a notebook"),
    ]
    log = sarif_log(findings, catalog=Catalog([rule]), root=in_tmp)
    sarif_validator.validate(log)
    results = log["runs"][0]["results"]
    props = {(r["ruleId"], r.get("locations", [{}])[0].get("physicalLocation", {}).get("region", {}).get("startLine")):
             r.get("properties") for r in results}
    assert props == {
        ("TA701", None): {"module": "m", "step": 1, "count": 1, "help": "Look"},
        ("TA101", 3): {"cell": 2, "cellLine": 3, "cellColumn": 20, "help": "In a notebook"},
        (rule.code, 3): {"help": "Call `sampler.set_epoch(epoch)` at the start of each epoch"},
        (rule.code, 30): None,
    }
    assert all(r["message"] == {"text": r["message"]["text"]} for r in results)  # message unchanged
    [descriptor] = [d for d in log["runs"][0]["tool"]["driver"]["rules"] if d["id"] == rule.code]
    markdown = descriptor["help"]["markdown"]
    assert "## How to fix\n\nCall `<sampler>.set_epoch(epoch)` at the start of each epoch" in markdown
    assert markdown.index("## Why is this bad?") < markdown.index("## How to fix") < markdown.index("## References")
    assert "How to fix\nCall `<sampler>.set_epoch(epoch)`" in descriptor["help"]["text"]


def test_html_shows_the_help(in_tmp):
    from torch_audit.report.html import render_html

    page = render_html([_finding(path="", module="m", step=1, help="Lower the <lr>")])
    assert "<b>help:</b> Lower the &lt;lr&gt;" in page


# -- the rule page -------------------------------------------------------------------------------


def test_rule_page_shows_how_to_fix_near_the_top():
    rule = load_catalog()["distributed-sampler-set-epoch-missing"]
    page = rule_page(rule)
    line = "How to fix: Call `<sampler>.set_epoch(epoch)` at the start of each epoch"
    assert line in page.splitlines()
    assert page.index("Severity:") < page.index(line) < page.index("## What it does")
    assert "**How to fix:** Call `<sampler>" in rule_page(rule, markdown=True)
    no_title = load_catalog()["syntax-error"]
    assert no_title.fix_title is None and "How to fix" not in rule_page(no_title)


# -- the command line ----------------------------------------------------------------------------


def _lint_cli(tmp_path, *args):
    (tmp_path / "m.py").write_text(FORWARD)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        return CliRunner().invoke(
            cli, ["lint", "--no-cache", "--jobs", "1", "--select", "TA310", *args], catch_exceptions=False
        )
    finally:
        os.chdir(old)


def test_cli_text_is_unchanged_and_full_adds_help(tmp_path):
    finding_line = "m.py:4:11: TA310 [*] `model.forward(...)` bypasses nn.Module.__call__: the forward/backward hooks of model do not run"
    text = _lint_cli(tmp_path).stdout.splitlines()
    assert text[0] == finding_line and not any("help" in line for line in text)
    full = _lint_cli(tmp_path, "--output-format", "full").stdout.splitlines()
    assert full[:7] == [
        finding_line,
        "  |",
        "4 | y = model.forward(x)",
        "  |           ^^^^^^^ TA310",
        "  |",
        "  = help: Call the module itself: `model(...)`",
        "",
    ]
    assert full[7:] == text[1:]  # the same summary
    quiet = _lint_cli(tmp_path, "--output-format", "full", "-q")
    assert quiet.stdout.splitlines() == full[:7] and quiet.exit_code == 1
    assert _lint_cli(tmp_path, "-q").stdout.splitlines() == [finding_line]
    data = json.loads(_lint_cli(tmp_path, "--output-format", "json").stdout)
    assert data[0]["help"] == "Call the module itself: `model(...)`"


def test_cli_full_after_fix_shows_what_remains_with_help(tmp_path):
    bad = fixture_dir(load_catalog()["tensor-conversion-result-discarded"]) / "bad.py"
    (tmp_path / "n.py").write_bytes(bad.read_bytes())
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(
            cli, ["lint", "--no-cache", "--jobs", "1", "--select", "TA311", "--fix", "--output-format", "full",
                  "-q", "n.py"], catch_exceptions=False,
        )
    finally:
        os.chdir(old)
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "n.py:32:9: TA311 `self.scale.cuda()` returns a new tensor that is discarded; self.scale itself is not converted"
    )
    assert lines[2].startswith("32 |") and "self.scale.cuda()" in lines[2]
    assert lines[-2:] == ["  = help: Assign the result: `self.scale = self.scale.cuda()`", ""]
