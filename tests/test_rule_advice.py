"""Advice in messages (issue 16): deprecated-torch-argument recommends the weights its fix writes;
unused-submodule speaks of parameters only for layers that have them.

`pretrained=True` loads the builder's first (legacy) weights; `weights="DEFAULT"` may load newer,
different ones. A message recommending DEFAULT next to a fix writing IMAGENET1K_V1 would tell the
user two different things (issue 16)."""

from __future__ import annotations

from torch_audit.catalog import load_catalog
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.sources import lint_source

SOURCE = b"""\
import torchvision
from torchvision.models import resnet18
from torchvision.models.detection import fasterrcnn_resnet50_fpn

a = torchvision.models.resnet50(pretrained=True)
b = resnet18(pretrained=False)
c = fasterrcnn_resnet50_fpn(pretrained=True, pretrained_backbone=True)
"""


def _findings():
    rule = load_catalog().get("TA603")
    return lint_source("t.py", SOURCE, LintSettings(rules=[rule])).findings


def test_message_names_the_value_the_fix_writes():
    fixed = [f for f in _findings() if f.fix is not None]
    assert len(fixed) == 3
    for f in fixed:
        written = f.fix.edits[0].content.split("=", 1)[1]
        assert f"={written}" in f.message, f.message
        assert "Weights.DEFAULT" not in f.message


def test_true_without_a_known_legacy_value_does_not_recommend_default():
    detection = [f for f in _findings() if f.line == 7 and "pretrained=" in f.message]
    assert len(detection) == 1 and detection[0].fix is None
    message = detection[0].message
    assert "Weights.DEFAULT" not in message and "IMAGENET1K_V1" not in message
    assert "may be newer, different weights" in message


UNUSED = b"""\
import torch.nn as nn


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.loss = nn.MSELoss()
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(x)
"""


def test_unused_submodule_speaks_of_parameters_only_for_layers_that_have_them():
    rule = load_catalog().get("TA206")
    found = {f.line: f.message for f in lint_source("t.py", UNUSED, LintSettings(rules=[rule])).findings}
    assert set(found) == {7, 8, 9}
    assert "parameters" not in found[7] and "parameters" not in found[8]  # MaxPool2d, MSELoss
    assert "its parameters never get a gradient" in found[9]  # Linear


PRIVATE = b"""\
import torch
from torch.nn.modules.utils import _pair


def pad(x):
    return _pair(x)
"""


def test_non_public_symbol_names_the_module_it_was_imported_from():
    # torch.nn.modules.utils is not torch.nn.utils: the message must not name a path that
    # does not exist
    rule = load_catalog().get("TA633")
    messages = [f.message for f in lint_source("t.py", PRIVATE, LintSettings(rules=[rule])).findings]
    assert len(messages) == 2
    assert all("torch.nn.modules.utils._pair" in m for m in messages), messages
