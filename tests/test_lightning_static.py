"""The linter knows Lightning: in a LightningModule's training_step, validation_step,
test_step, predict_step and configure_optimizers it does not ask for eval()/no_grad/zero_grad,
which the Trainer does (TA301-TA309 stay silent on a realistic project)."""

from __future__ import annotations

from pathlib import Path

from torch_audit.catalog import load_catalog
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.sources import lint_source

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "integrations" / "lightning_module.py"
TRAIN_EVAL_RULES = {f"TA{n}" for n in range(301, 310)}


def lint(source: bytes):
    from torch_audit.lint.project import build_project

    # as `torch-audit lint` does: the file linked as its own project (callers bind parameters)
    settings = LintSettings(rules=load_catalog().select(kind="static"))
    settings.project = build_project([FIXTURE], contents={FIXTURE: source})
    return lint_source(str(FIXTURE), source, settings).findings


def test_lightning_module_hooks_are_not_flagged():
    findings = lint(FIXTURE.read_bytes())
    flagged = [f"{f.line}: {f.code} {f.message}" for f in findings if f.code in TRAIN_EVAL_RULES]
    assert flagged == []


def test_the_same_code_outside_lightning_is_flagged():
    """The test can fail: the same validation code in a plain loop is reported."""
    plain = FIXTURE.read_text().replace(
        "def main():",
        "def evaluate(model, loader):\n"
        "    for x, y in loader:\n"
        "        logits = model(x)\n"
        "        print((logits.argmax(-1) == y).float().mean())\n"
        "\n\n"
        "def validate(loader):\n"
        "    evaluate(Encoder(32, 64), loader)  # an Encoder has BatchNorm and Dropout\n"
        "\n\n"
        "def main():",
    )
    codes = {f.code for f in lint(plain.encode())}
    assert codes & TRAIN_EVAL_RULES, codes
