"""torch-audit run lists a chain of non-finite findings root cause first (issue 19 item 4): the
activation that went non-finite, then the loss, gradient and parameter findings it caused,
each marked as a follow-on."""

from __future__ import annotations

from pathlib import Path

from torch_audit.findings import Finding
from torch_audit.runtime.causes import root_cause_first
from torch_audit.runtime.audited_run import audit_script

RUN = Path(__file__).resolve().parents[2] / "fixtures" / "run"


def _f(code: str, step: int, name: str = "x") -> Finding:
    return Finding(code=code, name=name, severity="error", message=f"{code} message", step=step)


def test_a_nan_between_layers_is_reported_root_cause_first():
    outcome = audit_script(str(RUN / "nan_between.py"))
    codes = [f.code for f in outcome.findings]
    assert codes[0] == "TA704", codes
    assert "between lin" in outcome.findings[0].message
    assert {"TA701", "TA702", "TA703"} <= set(codes)
    for f in outcome.findings[1:]:
        if f.code in ("TA701", "TA702", "TA703", "TA704"):
            assert "follow-on of TA704 at step 2" in f.message, f.message
    assert "follow-on" not in outcome.findings[0].message


def test_chains_by_step_and_stage():
    other = _f("TA804", 0, "gradients-not-cleared")
    found = [other, _f("TA703", 3), _f("TA701", 3), _f("TA702", 3), _f("TA704", 3), _f("TA701", 5)]
    ordered = root_cause_first(found)
    assert [(f.code, f.step) for f in ordered] == [
        ("TA804", 0), ("TA704", 3), ("TA701", 3), ("TA702", 3), ("TA703", 3), ("TA701", 5)]
    assert [("follow-on" in f.message) for f in ordered] == [False, False, True, True, True, True]
    assert found[1].message == "TA703 message"  # the session's findings are not changed


def test_an_independent_nan_later_is_its_own_root():
    # parameters stayed finite (no TA703): a non-finite loss 10 steps later is a new problem
    ordered = root_cause_first([_f("TA701", 2), _f("TA702", 2), _f("TA701", 12)])
    assert [("follow-on" in f.message) for f in ordered] == [False, True, False]


def test_the_text_report_names_the_root_cause_and_the_html_lists_it_first(tmp_path):
    from click.testing import CliRunner

    from torch_audit.runtime.run_command import run

    html = tmp_path / "r.html"
    result = CliRunner().invoke(run, ["--html", str(html), str(RUN / "nan_between.py")])
    assert result.exit_code == 1
    assert "note: TA704 nonfinite-activation at " in result.output
    assert "is the root cause of 4 non-finite findings marked follow-on" in result.output
    page = html.read_text()
    # sorted by line, the follow-on NaN of step 3 (line 15) came before its cause (line 18)
    root = page.index("first non-finite value made by the code between lin")
    assert root < page.index("first non-finite forward output: lin (Linear)")
    assert all(root < page.index(code) for code in ("TA701", "TA702", "TA703"))


def test_the_session_report_lists_the_root_cause_first():
    # the API's report (session.report(), the pytest plugin's section): the same chain order
    import torch
    from torch import nn

    import torch_audit

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.drop = nn.Dropout(0.1)
            self.out = nn.Linear(4, 1)

        def forward(self, x):
            h = self.lin(x)
            return self.out(self.drop(h / (h - h)))

    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torch_audit.audit(config=False) as session:
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
    lines = [line for line in session.report().splitlines() if " TA70" in line]
    assert " TA704 " in lines[0] and "between lin" in lines[0], lines
    assert all("follow-on of TA704 at step 0" in line for line in lines[1:]), lines
    assert all("follow-on" not in f.message for f in session.findings)  # the findings stay as read
