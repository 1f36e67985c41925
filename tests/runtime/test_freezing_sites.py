"""frozen-param-in-optimizer names the line that froze the parameters as a related location,
next to the optimizer's construction (issue 19 item 3): the statement is found in the user's
frames on the stack at the optimizer's step, its subject looked up in that frame."""

from __future__ import annotations

import textwrap

import pytest

from torch_audit.runtime.audited_run import audit_script

HEADER = """\
import torch
from torch import nn

torch.manual_seed(0)
"""

LOOP = """\
for step in range(2):
    opt.zero_grad()
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
"""


def _run(tmp_path, body: str, loop: str = ""):
    script = tmp_path / "train.py"
    script.write_text(HEADER + textwrap.dedent(body) + loop)
    outcome = audit_script(str(script), audit_options={"config": False, "select": ["TA801"]})
    assert outcome.status == 0, outcome.exception
    [finding] = outcome.findings
    lines = script.read_text().splitlines()
    return finding, [(lines[line - 1].strip(), what) for _, line, what in finding.related]


@pytest.mark.parametrize("freeze", [
    "model[0].weight.requires_grad = False\nmodel[0].bias.requires_grad = False\n",
    "for p in model[0].parameters():\n    p.requires_grad = False\n",
    "for name, p in model.named_parameters():\n    if name.startswith('0.'):\n        p.requires_grad_(False)\n",
    "model[0].requires_grad_(False)\n",
    "for m in model.modules():\n    if isinstance(m, nn.Linear) and m.out_features == 16:\n        for p in m.parameters():\n            p.requires_grad_(requires_grad=False)\n",
])
def test_the_freezing_line_is_a_related_location(tmp_path, freeze):
    body = ("model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))\n"
            "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n" + freeze + LOOP)
    finding, related = _run(tmp_path, body)
    assert finding.line == 6  # the optimizer's construction stays the finding's line
    freezing = [line.strip() for line in freeze.splitlines() if "requires_grad" in line]
    assert related == [(line, "requires_grad set to False here") for line in freezing]


def test_inside_a_function_on_the_stack(tmp_path):
    body = """\
    def main():
        backbone = nn.Linear(8, 16)
        model = nn.Sequential(backbone, nn.Linear(16, 1))
        optimizer = torch.optim.Adam(model.parameters())
        backbone.weight.requires_grad = False
        for step in range(2):
            optimizer.zero_grad()
            model(torch.randn(4, 8)).sum().backward()
            optimizer.step()

    main()
    """
    finding, related = _run(tmp_path, body)
    assert related == [("backbone.weight.requires_grad = False", "requires_grad set to False here")]
    assert "0.weight" in finding.message and "0.bias" not in finding.message


def test_freezing_in_a_returned_helper_gives_no_related_location(tmp_path):
    body = """\
    def freeze(m):
        for p in m.parameters():
            p.requires_grad = False

    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    freeze(model[0])
    """
    finding, related = _run(tmp_path, body, LOOP)
    assert related == []  # the helper's variables are gone: nothing is guessed


def test_an_unrelated_freezing_line_is_not_named(tmp_path):
    body = """\
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 1))
    other = nn.Linear(3, 3)
    other.weight.requires_grad = False
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model[1].bias.requires_grad_(False)
    """
    finding, related = _run(tmp_path, body, LOOP)
    assert related == [("model[1].bias.requires_grad_(False)", "requires_grad set to False here")]
