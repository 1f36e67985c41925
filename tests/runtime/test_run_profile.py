"""`torch-audit run model.py:build`: the per-module profile of one forward and backward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from torch_audit.runtime.run_command import run
from torch_audit.runtime.profile import parse_shape, profile_model

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "fixtures" / "run" / "model.py"


def invoke(*args: str):
    return CliRunner().invoke(run, list(args), catch_exceptions=False)


def test_json_profile_table_with_flops_shapes_and_findings():
    result = invoke("--output-format", "json", f"{MODEL}:build_with_inputs")
    assert result.exit_code == 0, result.output  # TA803 unused-parameter is a warning
    data = json.loads(result.stdout)
    rows = {m["name"]: m for m in data["modules"]}
    assert data["inputs"] == [{"shape": [2, 3, 8, 8], "dtype": "float32"}]
    assert data["backward_from"] == "the sum of the outputs"
    # 2*N*Cin*Cout*k*k*H*W for a 3x3 conv with 8 in/out channels on 2x8x8
    conv = rows["blocks.0.conv"]
    assert conv["forward_flops"] == 2 * 2 * 8 * 8 * 9 * 8 * 8
    assert conv["backward_flops"] == 2 * conv["forward_flops"]  # grad input + grad weight
    assert conv["calls"] == 1 and conv["output_shapes"] == [[2, 8, 8, 8]] and conv["params"] == 8 * 8 * 9 + 8
    assert rows["stem"]["backward_flops"] == rows["stem"]["forward_flops"]  # no grad for the input
    assert rows[""]["forward_flops"] == sum(
        rows[n]["forward_flops"] for n in ("stem", "blocks", "head")
    )
    assert rows["aux"]["calls"] == 0 and rows["aux"]["forward_ms"] == 0
    assert rows[""]["forward_ms"] > 0 and rows[""]["backward_ms"] > 0
    assert data["totals"]["forward_flops"] >= rows[""]["forward_flops"]
    assert data["totals"]["peak_memory_bytes"] >= rows[""]["peak_memory_bytes"] > 0
    assert data["totals"]["params"] == sum(p.numel() for p in torch.nn.Module.parameters(
        __import__("runpy").run_path(str(MODEL))["Net"](unused_head=True)))
    codes = {(f["code"], f["module"]) for f in data["findings"]}
    assert codes == {("TA803", "aux")}


def test_text_table_with_input_shape_after_the_target():
    result = invoke(f"{MODEL}:build", "--input-shape", "4,3,16,16")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Net on cpu; inputs: float32[4,3,16,16]")
    header = lines[1].split()
    assert header[:4] == ["module", "type", "calls", "params"]
    assert any(line.split()[:2] == ["conv", "Conv2d"] for line in lines)
    assert any(line.startswith("total") for line in lines)
    assert "All checks passed!" in result.stdout


def test_loss_fn_is_the_backward_root():
    result = invoke("--output-format", "json", f"{MODEL}:build_with_loss")
    data = json.loads(result.stdout)
    assert data["backward_from"] == "loss_fn(output)"
    total = data["totals"]
    assert total["forward_flops"] > 0 and total["backward_flops"] > 0


def test_nonfinite_at_initialisation_is_reported():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    profile = profile_model(model, torch.randn(3, 4))
    assert {"TA704"} <= {f.code for f in profile.findings}
    first = next(f for f in profile.findings if f.code == "TA704")
    assert first.module == "0"


@pytest.mark.parametrize(
    "args,message",
    [
        ([f"{MODEL}:build"], "returned only a module: give its inputs with --input-shape"),
        ([f"{MODEL}:not_a_model"], "must return an nn.Module"),
        ([f"{MODEL}:missing"], "has no attribute 'missing'"),
        ([f"{MODEL}:build", "--input-shape", "4,x"], "comma-separated integers"),
        ([f"{MODEL}:build", "--input-shape", "4,3,8,8:complex7"], "unknown dtype"),
    ],
)
def test_profile_usage_errors(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_parse_shape():
    assert parse_shape("8,3,32,32", torch.float32) == ((8, 3, 32, 32), torch.float32)
    assert parse_shape("8x128:int64", torch.float32) == ((8, 128), torch.int64)


# -- issue 19 item 9 -----------------------------------------------------------------------------

RESBLOCK = ROOT / "fixtures" / "run" / "resblock.py"


class SlowOnce(nn.Module):
    """A layer that does a large matmul on one call only: the 1st call is the audited pass, the
    2nd the warm-up, the 3rd the first measured repeat."""

    def __init__(self, slow_call: int) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.calls = 0
        self.slow_call = slow_call

    def forward(self, x):
        self.calls += 1
        if self.calls == self.slow_call:
            a = torch.ones(600, 600)
            for _ in range(8):
                a = a @ a / 600
        return self.lin(x)


@pytest.mark.parametrize("slow_call", [2, 3])
def test_times_are_medians_of_repeats_after_a_warm_up(slow_call):
    model = nn.Sequential(SlowOnce(slow_call))
    profile = profile_model(model, torch.randn(4, 8), repeats=5)
    assert model[0].calls == 1 + 1 + 5  # audited pass, warm-up, repeats
    row = next(m for m in profile.modules if m.name == "0")
    assert len(row.forward_ms_runs) == 5
    assert row.forward_ms == sorted(row.forward_ms_runs)[2]
    # the one slow call (the warm-up's or one repeat's) does not show in the median
    slow = max(row.forward_ms_runs) if slow_call == 3 else None
    assert row.forward_ms < 5.0, row.forward_ms_runs
    if slow is not None:
        assert slow > 10 * row.forward_ms
    assert row.calls == 1  # calls and shapes are those of one pass


def test_backward_is_charged_to_the_module_whose_forward_made_each_operation():
    # torch's module tracker kept the downsample branch open during the main branch's backward
    # (its input is shared): its 1x1 conv was charged the whole block's backward
    result = invoke("--output-format", "json", "-o", "-", f"{RESBLOCK}:build")
    assert result.exit_code == 0, result.output
    rows = {m["name"]: m for m in json.loads(result.stdout)["modules"]}
    down = rows["block.downsample.0"]
    assert down["backward_flops"] == 2 * down["forward_flops"]  # grad input + grad weight
    def parent(n: str) -> str:
        return n.rsplit(".", 1)[0] if "." in n else ""

    for name, row in rows.items():
        children = [r for n, r in rows.items() if n and parent(n) == name]
        if children:
            assert sum(c["backward_flops"] for c in children) <= row["backward_flops"], name


def test_the_total_row_says_it_includes_the_loss():
    result = invoke(f"{MODEL}:build_with_loss")
    assert result.exit_code == 0, result.output
    totals = [line for line in result.stdout.splitlines() if line.startswith("total")]
    assert totals and totals[0].startswith("total (incl. loss)")


def test_the_synthetic_backward_does_not_report_an_exploding_gradient():
    # backward from the sum of a wide output: a gradient norm far above max_norm that no
    # training step would see
    model = nn.Linear(64, 4096)
    profile = profile_model(model, torch.full((64, 64), 10.0))
    assert profile.backward_from == "the sum of the outputs"
    assert "TA705" not in {f.code for f in profile.findings}


def test_the_html_profile_names_the_total_the_same_way(tmp_path):
    page = tmp_path / "p.html"
    result = invoke("--html", str(page), f"{MODEL}:build_with_loss")
    assert result.exit_code == 0, result.output
    assert "total (incl. loss)" in page.read_text()
