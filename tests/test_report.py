"""Output formats: text, json, sarif and github (torch_audit.report)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest

from torch_audit import __version__
from torch_audit.catalog import Catalog
from torch_audit.findings import Applicability, Edit, Finding, Fix, Severity
from torch_audit.report import FORMATS, escape_data, escape_property, render, sarif_log
from torch_audit.rule import StaticRule

SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "sarif-schema-2.1.0.json"  # vendored: tests/data/README.md
ESC = "\x1b["


class SoftmaxRule(StaticRule):
    """## What it does
    Checks for a softmax applied right before `cross_entropy`. It is silent otherwise.

    ## Why is this bad?
    `cross_entropy` applies `log_softmax` itself.

    ## Fix safety
    Safe.

    ## References
    - https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html
    """

    code = "TA101"
    name = "softmax-before-cross-entropy"
    severity = Severity.ERROR
    message = "softmax before cross_entropy"
    fixable = "always"


class EvalRule(StaticRule):
    """## What it does
    Checks for inference without `model.eval()`.

    ## Why is this bad?
    Dropout and batch norm behave differently in training mode.

    ## References
    - https://pytorch.org/docs/stable/notes/autograd.html
    """

    code = "TA103"
    name = "missing-eval-for-inference"
    severity = Severity.INFO
    message = "inference without eval()"
    status = "preview"


CATALOG = Catalog([SoftmaxRule, EvalRule])
SAFE = Fix("Remove the softmax", Applicability.SAFE, (Edit(3, 20, 3, 38, "logits"),))
UNSAFE = Fix("Call model.eval()", Applicability.UNSAFE, (Edit(9, 1, 9, 1, "model.eval()\n"),))


def finding(code="TA101", name="softmax-before-cross-entropy", severity="error", message="msg",
            path="pkg/train.py", line=3, column=20, **kw) -> Finding:
    return Finding(code, name, severity, message, path=path, line=line, column=column, **kw)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def findings(in_tmp):
    return [
        finding("TA102", "bias-before-norm", "warning", "bias before BatchNorm2d",
                path="pkg/model.py", line=12, column=9, end_column=30),
        finding(message="softmax before cross_entropy", end_column=38, fix=SAFE),
        finding("TA103", "missing-eval-for-inference", "info", "inference without eval()",
                line=9, column=1, end_line=11, end_column=5, fix=UNSAFE),
    ]


@pytest.fixture(scope="module")
def sarif_validator():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft4Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_formats_and_unknown_format():
    assert FORMATS == ("text", "full", "json", "sarif", "github", "gitlab", "junit")
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        render([], "xml")


# -- text ------------------------------------------------------------------------------------


def test_text_lines_summary_and_fix_hints(findings):
    assert render(findings, "text").splitlines() == [
        "pkg/model.py:12:9: TA102 bias before BatchNorm2d",
        "pkg/train.py:3:20: TA101 [*] softmax before cross_entropy",
        "pkg/train.py:9:1: TA103 inference without eval()",
        "Found 3 findings (1 error, 1 warning, 1 info).",
        "[*] 1 fixable with the `--fix` option (1 hidden fix can be enabled with the "
        "`--unsafe-fixes` option).",
    ]


def test_text_unsafe_fixes_enabled(findings):
    out = render(findings, "text", unsafe_fixes=True).splitlines()
    assert out[2] == "pkg/train.py:9:1: TA103 [*] inference without eval()"
    assert out[-1] == "[*] 2 fixable with the `--fix` option."


def test_text_only_hidden_fixes(in_tmp):
    out = render([finding(fix=UNSAFE)], "text", hidden_unsafe_fixes=2).splitlines()
    assert out == [
        "pkg/train.py:3:20: TA101 msg",
        "Found 1 finding (1 error, 0 warnings, 0 info).",
        "No fixes available (3 hidden fixes can be enabled with the `--unsafe-fixes` option).",
    ]


def test_text_no_fix_hint(findings):
    out = render(findings, "text", show_fix_hint=False).splitlines()
    assert out[-1] == "Found 3 findings (1 error, 1 warning, 1 info)."
    assert "[*]" in out[1]  # the per-finding marker stays


def test_text_all_checks_passed_and_files_checked(in_tmp):
    assert render([], "text") == "All checks passed!\n"
    assert render([], "text", files_checked=12) == "All checks passed! (12 files checked)\n"
    out = render([finding(severity="warning")], "text", files_checked=1).splitlines()
    assert out[-1] == "Found 1 finding (0 errors, 1 warning, 0 info) in 1 checked file."


def test_text_has_no_colour_unless_asked(findings):
    assert ESC not in render(findings, "text")
    assert ESC not in render(findings, "text", statistics=True)
    assert ESC not in render([], "text")


def test_text_colour(findings):
    out = render(findings, "text", color=True).splitlines()
    bold, red, yellow, cyan, reset = "\x1b[1m", "\x1b[31m", "\x1b[33m", "\x1b[36m", "\x1b[0m"
    colon = f"{cyan}:{reset}"
    assert out[0] == (
        f"{bold}pkg/model.py{reset}{colon}12{colon}9{colon} {bold}{yellow}TA102{reset} "
        "bias before BatchNorm2d"
    )
    assert out[1].startswith(f"{bold}pkg/train.py{reset}{colon}3{colon}20{colon} ")
    assert f"{bold}{red}TA101{reset} {cyan}[*]{reset} softmax" in out[1]
    assert f"{bold}{cyan}TA103{reset} inference" in out[2]
    assert out[3] == "Found 3 findings (1 error, 1 warning, 1 info)."
    assert ESC in render([], "text", color=True)


def test_text_runtime_extras(in_tmp):
    runtime = [
        finding("TA201", "nan-loss", "error", "loss became NaN", path="", module="encoder.layer.0",
                step=3, count=5, value=float("nan")),
        finding("TA202", "dead-relu", "warning", "82% of activations are zero",
                path="pkg/model.py", line=4, column=5, module="encoder.act", step=10),
        finding("TA203", "grad-spike", "info", "gradient spike", path="", step=7, rank=1, count=2),
    ]
    assert render(runtime, "text", show_fix_hint=False).splitlines() == [
        "TA201 loss became NaN (module: encoder.layer.0, step: 3, seen 5x)",
        "TA203 gradient spike (step: 7, rank: 1, seen 2x)",
        "pkg/model.py:4:5: TA202 82% of activations are zero (module: encoder.act, step: 10)",
        "Found 3 findings (1 error, 1 warning, 1 info).",
    ]


def test_text_paths_relative_to_cwd_when_below(in_tmp):
    inside = str(in_tmp / "pkg" / "train.py")
    outside = str(in_tmp.parent / "elsewhere.py")
    out = render([finding(path=inside), finding(path=outside)], "text").splitlines()
    assert f"{os.path.join('pkg', 'train.py')}:3:20: TA101 msg" in out
    assert f"{outside}:3:20: TA101 msg" in out


def test_text_statistics(findings):
    more = findings + [finding(line=30, fix=SAFE), finding(line=40)]
    assert render(more, "text", statistics=True).splitlines() == [
        "3\tTA101\t[*] softmax-before-cross-entropy",
        "1\tTA102\t[ ] bias-before-norm",
        "1\tTA103\t[ ] missing-eval-for-inference",
    ]
    plain = [finding("TA102", "bias-before-norm", "warning")] * 12
    assert render(plain, "text", statistics=True) == "12\tTA102\tbias-before-norm\n"
    assert render([], "text", statistics=True) == ""


def test_json_statistics(findings):
    rows = json.loads(render(findings, "json", statistics=True))
    assert rows[0] == {"code": "TA101", "name": "softmax-before-cross-entropy", "count": 1,
                       "fixable": True}
    assert [r["code"] for r in rows] == ["TA101", "TA102", "TA103"]


# -- json ------------------------------------------------------------------------------------

STATIC_KEYS = ["code", "name", "severity", "message", "help", "path", "line", "column",
               "end_line", "end_column", "fix"]


def test_json_keys_values_and_order(findings):
    text = render(findings, "json")
    assert text.endswith("]\n") and text.startswith("[\n  {\n    \"code\"")
    data = json.loads(text)
    assert [list(d) for d in data] == [STATIC_KEYS] * 3
    assert [(d["path"], d["line"], d["code"]) for d in data] == [
        ("pkg/model.py", 12, "TA102"), ("pkg/train.py", 3, "TA101"), ("pkg/train.py", 9, "TA103"),
    ]
    assert data[0] == {
        "code": "TA102", "name": "bias-before-norm", "severity": "warning",
        "message": "bias before BatchNorm2d", "help": None, "path": "pkg/model.py", "line": 12,
        "column": 9, "end_line": 12, "end_column": 30, "fix": None,
    }
    assert data[1]["fix"] == {
        "description": "Remove the softmax", "applicability": "safe",
        "edits": [{"start_line": 3, "start_column": 20, "end_line": 3, "end_column": 38,
                   "content": "logits"}],
    }
    assert data[2]["fix"]["applicability"] == "unsafe"
    assert data == [f.to_dict() for f in sorted(findings, key=lambda f: f.sort_key)]


def test_json_is_stable_under_input_order(findings):
    assert render(findings, "json") == render(list(reversed(findings)), "json")
    assert render([], "json") == "[]\n"


def test_json_runtime_extras_and_non_finite_values():
    data = json.loads(render([
        finding("TA201", "nan-loss", "error", "loss became NaN", path="", module="head", step=3,
                count=4, value=float("inf"), rank=0),
        finding("TA202", "dead-relu", "warning", "dead", path="", module="act", step=5, value=0.82),
    ], "json"))
    assert list(data[0]) == STATIC_KEYS + ["module", "step", "count", "value", "rank"]
    assert data[0]["value"] == "inf" and data[0]["count"] == 4 and data[0]["rank"] == 0
    assert list(data[1]) == STATIC_KEYS + ["module", "step", "count", "value"]
    assert data[1]["value"] == 0.82


# -- sarif -----------------------------------------------------------------------------------


def test_text_and_json_list_the_root_cause_first_and_mark_follow_ons(in_tmp):
    # issue 19 item 4: by position the non-finite gradient (line 5) comes before the activation
    # that made it (line 20); text and json list the cause first, as the HTML report does
    def nonfinite(code: str, line: int) -> Finding:
        return Finding(code, code.lower(), Severity.ERROR, f"{code} non-finite", path="train.py", line=line,
                       module="net.lin", step=3)

    found = [nonfinite("TA702", 5), nonfinite("TA704", 20)]
    text = render(found, "text", summary=False)
    first, second = text.splitlines()[:2]
    assert "TA704" in first and "follow-on" not in first
    assert "TA702" in second and "(follow-on of TA704 at step 3)" in second
    data = json.loads(render(found, "json"))
    assert [d["code"] for d in data] == ["TA704", "TA702"]
    assert data[1]["message"].endswith("(follow-on of TA704 at step 3)")
    # lint findings (no step, no module) keep the order by position
    lint = [Finding("TA702", "x", Severity.ERROR, "m", path="train.py", line=5),
            Finding("TA704", "y", Severity.ERROR, "m", path="train.py", line=20)]
    assert [d["code"] for d in json.loads(render(lint, "json"))] == ["TA702", "TA704"]


def test_sarif_valid_with_metadata(findings, in_tmp, sarif_validator):
    engine = finding("E902", "syntax-error", "error", "invalid syntax", path="pkg/broken.py",
                     line=2, column=7)
    text = render(findings + [engine], "sarif", catalog=CATALOG, root=in_tmp)
    log = json.loads(text)
    sarif_validator.validate(log)
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    assert run["columnKind"] == "unicodeCodePoints"
    driver = run["tool"]["driver"]
    assert driver["name"] == "torch-audit"
    assert driver["version"] == __version__
    assert driver["informationUri"].startswith("https://")
    assert [r["id"] for r in driver["rules"]] == ["E902", "TA101", "TA102", "TA103"]

    softmax = driver["rules"][1]
    assert softmax["name"] == "softmax-before-cross-entropy"
    assert softmax["shortDescription"]["text"] == (
        "Checks for a softmax applied right before `cross_entropy`."
    )
    assert softmax["fullDescription"]["text"].endswith("It is silent otherwise.")
    assert softmax["help"]["markdown"].startswith("## What it does\n\nChecks for a softmax")
    assert "## Fix safety\n\nSafe." in softmax["help"]["markdown"]
    assert softmax["help"]["text"].startswith("What it does\nChecks for a softmax")
    assert softmax["defaultConfiguration"] == {"level": "error"}
    assert softmax["properties"]["tags"] == ["torch-audit", "static"]
    assert softmax["properties"]["precision"] == "high"
    evalr = driver["rules"][3]
    assert evalr["defaultConfiguration"] == {"level": "note"}
    assert "preview" in evalr["properties"]["tags"]
    # Not in the catalogue (TA102, the engine code E902): a minimal descriptor from the finding.
    assert driver["rules"][0]["name"] == "syntax-error"
    assert driver["rules"][0]["shortDescription"]["text"] == "Syntax error"
    assert driver["rules"][2]["defaultConfiguration"] == {"level": "warning"}

    results = run["results"]
    assert [(r["ruleId"], r["ruleIndex"], r["level"]) for r in results] == [
        ("E902", 0, "error"), ("TA102", 2, "warning"), ("TA101", 1, "error"), ("TA103", 3, "note"),
    ]
    loc = results[2]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "pkg/train.py", "uriBaseId": "%SRCROOT%"}
    assert loc["region"] == {"startLine": 3, "startColumn": 20, "endLine": 3, "endColumn": 38}
    assert results[2]["message"] == {"text": "softmax before cross_entropy"}
    replacement = results[2]["fixes"][0]["artifactChanges"][0]["replacements"][0]
    assert replacement == {
        "deletedRegion": {"startLine": 3, "startColumn": 20, "endLine": 3, "endColumn": 38},
        "insertedContent": {"text": "logits"},
    }
    assert "fixes" not in results[0]


def test_sarif_validator_rejects_bad_logs(findings, sarif_validator):
    log = sarif_log(findings)
    log["runs"][0]["results"][0]["level"] = "info"
    with pytest.raises(jsonschema.ValidationError):
        sarif_validator.validate(log)


def test_sarif_without_catalog(findings, sarif_validator):
    log = sarif_log(findings)
    sarif_validator.validate(log)
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert rules[0]["shortDescription"]["text"] == "Softmax before cross entropy"
    assert {r["id"] for r in rules} == {"TA101", "TA102", "TA103"}


def test_sarif_empty(sarif_validator):
    log = json.loads(render([], "sarif", catalog=CATALOG))
    sarif_validator.validate(log)
    assert log["runs"][0]["results"] == [] and log["runs"][0]["tool"]["driver"]["rules"] == []


def test_sarif_uris(in_tmp, sarif_validator, tmp_path_factory):
    outside = tmp_path_factory.mktemp("other") / "x.py"
    spaced = in_tmp / "my dir" / "a b.py"
    fs = [
        finding(path=str(in_tmp / "pkg" / "train.py")),  # absolute, below root
        finding(path="pkg/./model.py"),  # relative to the cwd
        finding(path=str(spaced)),
        finding(path=str(outside)),
    ]
    log = sarif_log(fs, root=in_tmp)
    sarif_validator.validate(log)
    locs = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: r["locations"][0][
            "physicalLocation"]["artifactLocation"].get("uriBaseId")
        for r in log["runs"][0]["results"]
    }
    assert locs == {
        "pkg/train.py": "%SRCROOT%",
        "pkg/model.py": "%SRCROOT%",
        "my%20dir/a%20b.py": "%SRCROOT%",
        outside.as_uri(): None,
    }
    # No URI format checker ships with jsonschema here: check the URIs are well-formed by hand.
    assert all(re.fullmatch(r"[A-Za-z0-9._~%/:-]+", uri) for uri in locs)
    # root given relative to the cwd
    sub = sarif_log([finding(path="pkg/train.py")], root="pkg")
    assert sub["runs"][0]["results"][0]["locations"][0]["physicalLocation"][
        "artifactLocation"]["uri"] == "train.py"


def test_sarif_runtime_findings_and_odd_regions(sarif_validator):
    fs = [
        finding("TA201", "nan-loss", "error", "NaN", path="", module="head", step=3, count=2,
                value=float("nan")),
        finding(path="a.py", line=0, column=0, end_line=0, end_column=0),
        finding(path="b.py", line=5, column=9, end_line=5, end_column=3),
    ]
    log = sarif_log(fs, tool_name="torch-audit-runtime")
    sarif_validator.validate(log)
    results = log["runs"][0]["results"]
    assert "locations" not in results[0]
    assert results[0]["properties"] == {"module": "head", "step": 3, "count": 2, "value": "nan"}
    assert results[1]["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 1, "startColumn": 1, "endLine": 1, "endColumn": 1}
    assert results[2]["locations"][0]["physicalLocation"]["region"]["endColumn"] == 9
    assert log["runs"][0]["tool"]["driver"]["name"] == "torch-audit-runtime"


# -- github ----------------------------------------------------------------------------------


def test_github_lines(findings):
    assert render(findings, "github").splitlines() == [
        "::warning file=pkg/model.py,line=12,col=9,endLine=12,endColumn=30,"
        "title=TA102 bias-before-norm::bias before BatchNorm2d",
        "::error file=pkg/train.py,line=3,col=20,endLine=3,endColumn=38,"
        "title=TA101 softmax-before-cross-entropy::softmax before cross_entropy",
        "::notice file=pkg/train.py,line=9,col=1,endLine=11,endColumn=5,"
        "title=TA103 missing-eval-for-inference::inference without eval()",
    ]
    assert render([], "github") == ""


def test_github_escaping(in_tmp):
    assert escape_data("100% a\r\nb:c,d") == "100%25 a%0D%0Ab:c,d"
    assert escape_property("100% a\r\nb:c,d") == "100%25 a%0D%0Ab%3Ac%2Cd"
    line = render([finding(path="pkg/a,b:c%.py", message="50% of\nsteps: NaN, inf")], "github")
    assert line == (
        "::error file=pkg/a%2Cb%3Ac%25.py,line=3,col=20,endLine=3,endColumn=20,"
        "title=TA101 softmax-before-cross-entropy::50%25 of%0Asteps: NaN, inf\n"
    )


def test_github_runtime(in_tmp):
    line = render([finding("TA201", "nan-loss", "warning", "NaN", path="", module="enc", step=2)],
                  "github")
    assert line == "::warning title=TA201 nan-loss::NaN (module: enc, step: 2)\n"


def test_github_paths_relative_to_cwd(in_tmp):
    line = render([finding(path=str(in_tmp / "pkg" / "train.py"))], "github")
    assert line.startswith(f"::error file={os.path.join('pkg', 'train.py')},line=3,")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_ends_with_newline_and_is_deterministic(findings, fmt):
    out = render(findings, fmt, catalog=CATALOG)
    assert out.endswith("\n")
    assert out == render(list(reversed(findings)), fmt, catalog=CATALOG)
