"""`torch-audit run SCRIPT`: the script behaves as under plain python, the report always appears,
and the exit status is the script's own (or 1 for findings when it succeeded).

Real subprocesses where the process boundary is the point (exit status, signals, what the
script sees, worker processes); the rest in-process through click's runner or the Python API."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from torch_audit.runtime import script as script_runner
from torch_audit.runtime.audited_run import RunOutcome, audit_script
from torch_audit.runtime.run_command import parse_option_flags, run
from torch_audit.runtime.run_report import final_status
from torch_audit.findings import Finding

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "fixtures" / "run"
RUNTIME = ROOT / "fixtures" / "runtime"
ENV = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
SUMMARY_OK = "All checks passed!"


def ta(*args: str, cwd: Path = RUN, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch_audit", "run", *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout,
    )


def py(*args: str, cwd: Path = RUN) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


def both(*args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """``python ARGS`` and ``torch-audit run ARGS`` side by side (concurrently, to save time)."""
    procs = [
        subprocess.Popen(cmd, cwd=RUN, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in ([sys.executable, *args], [sys.executable, "-m", "torch_audit", "run", *args])
    ]
    done = []
    for cmd, p in zip(("python", "run"), procs):
        out, err = p.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done[0], done[1]


def invoke(*args: str) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(run, list(args), catch_exceptions=False)


# -- subprocess: the process boundary -----------------------------------------------------------


def test_script_sees_what_python_gives_it():
    plain, audited = both("whoami.py", "a", "--select", "x")
    assert plain.returncode == 0, plain.stderr
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout) == json.loads(plain.stdout)
    seen = json.loads(audited.stdout)
    assert seen["argv"] == ["whoami.py", "a", "--select", "x"]
    assert seen["path0"] == str(RUN) and seen["cwd"] == str(RUN)
    assert seen["main_is_me"] and seen["spec_is_none"]
    assert "audited 0 optimizer steps" in audited.stderr
    assert "no torch.optim optimizer stepped" in audited.stderr and SUMMARY_OK not in audited.stderr


def test_module_sees_what_python_m_gives_it():
    plain, audited = both("-m", "runpkg.who", "x", "-y")
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout) == json.loads(plain.stdout)
    assert json.loads(audited.stdout)["spec"] == "runpkg.who"


def test_exception_passes_through_after_the_report():
    plain, audited = both("raises.py")
    assert plain.returncode == audited.returncode == 1
    report = audited.stderr.index("audited 2 optimizer steps of raises.py (the script raised ValueError)")
    trace = audited.stderr.index("Traceback (most recent call last):")
    assert report < trace
    # the traceback is python's own, starting in the script (no torch-audit frames)
    assert audited.stderr[trace:] == plain.stderr


def test_sys_exit_status_passes_through_with_the_report():
    audited = ta("exits.py")
    assert audited.returncode == 3
    assert "audited 2 optimizer steps of exits.py (the script exited with status 3)" in audited.stderr
    assert SUMMARY_OK in audited.stderr


def test_sigint_reports_then_ends_like_python():
    plain, audited = both("sigint.py")
    assert plain.returncode == audited.returncode == -signal.SIGINT
    assert "not reached" not in audited.stdout
    assert "audited 2 optimizer steps of sigint.py (interrupted)" in audited.stderr
    assert audited.stderr.rstrip().endswith("KeyboardInterrupt")


def test_max_steps_stops_cleanly_and_reports_json_on_stdout_when_asked():
    audited = ta("--max-steps", "3", "--output-format", "json", "-o", "-", "forever.py")
    assert audited.returncode == 0, audited.stderr
    lines = audited.stdout.splitlines()
    # the script's finally block ran: the 3rd optimizer.step() stopped it inside train()
    assert lines[0] == "finally ran after 2 steps"
    assert json.loads("\n".join(lines[1:])) == []
    assert "audited" not in audited.stderr  # the text preface belongs to the text format only


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_a_machine_format_never_mixes_into_the_scripts_stdout(fmt):
    # issue 19 item 7: stdout belongs to the script; a JSON/SARIF report there could not be
    # parsed. Without -o it is a usage error before the script starts.
    result = invoke("--output-format", fmt, str(RUN / "chatty.py"))
    assert result.exit_code == 2
    assert f"--output-format {fmt} needs -o FILE" in result.output
    assert "epoch 0 done" not in result.output  # the script never ran


def test_steps_of_several_optimizers_are_counted_per_optimizer():
    # issue 19 item 7: a GAN stopped by --max-steps 4 ran 4 steps of each of its 2 optimizers
    result = invoke("--max-steps", "4", str(RUN / "gan.py"))
    assert "audited 4 steps of 2 optimizers of " in result.output, result.output
    assert "8 optimizer steps" not in result.output
    outcome = audit_script(str(RUN / "gan.py"), max_steps=3)
    assert outcome.optimizer_steps == {"SGD": 3, "Adam": 3}


def test_findings_fail_a_successful_script_and_sarif_goes_to_a_file(tmp_path):
    out = tmp_path / "report.sarif"
    audited = ta("--output-format", "sarif", "-o", str(out),
                 str(RUNTIME / "nonfinite_loss" / "bad.py"), cwd=tmp_path)
    assert audited.returncode == 1, audited.stderr
    assert audited.stdout == ""
    sarif = json.loads(out.read_text())
    results = sarif["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["TA701"]
    loc = results[0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"].endswith("nonfinite_loss/bad.py")
    assert loc["region"]["startLine"] == 15  # loss.backward()
    assert not list(tmp_path.glob(".report.sarif.*"))  # atomic write left no temporary


@pytest.mark.parametrize("method,workers", [("fork", 2), ("spawn", 1)])
def test_dataloader_workers(method, workers):
    audited = ta("workers.py", method, str(workers))
    assert audited.returncode == 0, audited.stderr
    assert f"trained 4 batches with {workers} {method} workers" in audited.stdout
    assert "audited 4 optimizer steps" in audited.stderr and SUMMARY_OK in audited.stderr


# -- in-process: the API and the command's options ----------------------------------------------


def test_checkpoint_of_main_classes_round_trips(tmp_path, capsys):
    outcome = audit_script(str(RUN / "checkpoint.py"), [str(tmp_path)])
    assert outcome.exception is None and outcome.status == 0
    assert "checkpoint round trip ok" in capsys.readouterr().out
    assert outcome.steps == 2 and outcome.findings == []


def test_bf16_autocast_training_is_silent(capsys):
    outcome = audit_script(str(RUN / "autocast_bf16.py"))
    assert outcome.exception is None, outcome.exception
    assert outcome.steps == 6 and outcome.findings == []


def test_sys_state_is_restored_after_the_script():
    argv, path0, main = list(sys.argv), sys.path[0], sys.modules["__main__"]
    outcome = audit_script(str(RUN / "raises.py"))
    assert isinstance(outcome.exception, ValueError)
    assert (sys.argv, sys.path[0], sys.modules["__main__"]) == (argv, path0, main)
    tb = script_runner.trim_traceback(outcome.exception.__traceback__)
    assert tb.tb_frame.f_code.co_filename == str(RUN / "raises.py")


def test_a_script_that_audits_itself_is_told_run_already_does(tmp_path):
    from torch_audit.runtime.errors import SessionActiveError
    from torch_audit.runtime.session import active_session

    script = tmp_path / "self_audit.py"
    script.write_text("import torch_audit\nwith torch_audit.audit():\n    pass\n")
    outcome = audit_script(str(script))
    assert isinstance(outcome.exception, SessionActiveError)
    assert "started by `torch-audit run`" in str(outcome.exception)
    assert "drop the inner `torch_audit.audit()` block" in str(outcome.exception)
    assert active_session() is None


def test_progress_line_only_when_asked(monkeypatch):
    stream = io.StringIO()
    outcome = audit_script(str(RUN / "forever.py"), max_steps=5, progress=stream)
    assert outcome.stopped_at_max_steps and outcome.steps == 5
    text = stream.getvalue()
    assert "torch-audit: step 1 · loss " in text and "0 findings" in text
    assert text.endswith("\r\x1b[2K")  # cleared before the report
    # click's runner gives a non-TTY stderr: no status line by default
    result = invoke("--max-steps", "2", str(RUN / "forever.py"))
    assert "\x1b[2K" not in result.output


class _Terminal(io.StringIO):
    """stdout and stderr of one terminal: one screen, in the order things were written."""

    def isatty(self) -> bool:
        return True


def test_progress_line_is_cleared_before_the_script_prints(monkeypatch):
    # issue 19 item 7: the status line ("torch-audit: step 1 · ...") is drawn without a newline;
    # a line the script prints must not be glued to its end
    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    outcome = audit_script(str(RUN / "chatty.py"), progress=screen)
    assert outcome.status == 0
    text = screen.getvalue()
    assert "torch-audit: step 1" in text  # the line was drawn
    for n in range(3):
        at = text.index(f"epoch {n} done")
        before = text[:at]
        # the script's line starts on a clean line: the status line (if drawn) was cleared
        assert before.endswith("\n") or before.endswith("\r\x1b[2K") or before == "", repr(before[-60:])
    assert sys.stdout is screen  # the script's streams are given back


def test_exit_status_rules():
    err = Finding(code="TA701", name="nonfinite-loss", severity="error", message="m", step=0)
    warn = Finding(code="TA705", name="exploding-gradient", severity="warning", message="m", step=0)
    assert final_status(RunOutcome([err]), fail_on="error", exit_zero=False) == 1
    assert final_status(RunOutcome([warn]), fail_on="error", exit_zero=False) == 0
    assert final_status(RunOutcome([warn]), fail_on="warning", exit_zero=False) == 1
    assert final_status(RunOutcome([err]), fail_on="error", exit_zero=True) == 0
    # the script's own failure wins over findings
    assert final_status(RunOutcome([err], status=3), fail_on="error", exit_zero=False) == 3
    assert final_status(RunOutcome([], status=3), fail_on="error", exit_zero=True) == 3


def test_select_ignore_and_exit_zero():
    bad = str(RUNTIME / "nonfinite_activation" / "bad.py")
    only = invoke("--select", "nonfinite-loss", "--output-format", "json", "-o", "-", bad)
    assert only.exit_code == 1
    assert {f["code"] for f in json.loads(only.stdout)} == {"TA701"}
    ignored = invoke("--ignore", "TA70", "--output-format", "json", "-o", "-", bad)
    assert ignored.exit_code == 0 and json.loads(ignored.stdout) == []
    zero = invoke("--exit-zero", "--select", "TA701", bad)
    assert zero.exit_code == 0 and "TA701" in zero.stderr


def test_full_output_adds_the_help_lines_on_stderr():
    bad = str(RUNTIME / "nonfinite_activation" / "bad.py")
    concise = invoke("--select", "nonfinite-loss", bad)
    full = invoke("--select", "nonfinite-loss", "--output-format", "full", bad)
    assert full.exit_code == concise.exit_code == 1
    assert "help:" not in concise.stderr
    finding = next(line for line in full.stderr.splitlines() if "TA701" in line)
    assert finding in concise.stderr  # the same finding line, then what to do about it
    after = full.stderr.splitlines()[full.stderr.splitlines().index(finding) + 1 :]
    help_line = next(line for line in after if "help:" in line)  # after the source frame
    assert help_line.startswith("  = help: ") and len(help_line) > len("  = help: "), full.stderr


def test_pyproject_configures_run(tmp_path):
    src = (RUNTIME / "exploding_gradient" / "bad.py").read_text()
    (tmp_path / "train.py").write_text(src)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.torch-audit]\nfail-on = "warning"\n'
        '[tool.torch-audit.options.exploding-gradient]\nfactor = 1e9\nmax_norm = 0.0\n'
    )
    quiet = invoke("--output-format", "json", "-o", "-", str(tmp_path / "train.py"))
    assert quiet.exit_code == 0 and json.loads(quiet.stdout) == []
    # the command line overrides the file; fail-on = warning makes TA705 (a warning) fail
    loud = invoke("--option", "exploding-gradient.factor=10", "--output-format", "json", "-o", "-",
                  str(tmp_path / "train.py"))
    assert [f["code"] for f in json.loads(loud.stdout)] == ["TA705"]
    assert loud.exit_code == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--option", "exploding-gradient.nope=1"], "unknown option 'nope' for exploding-gradient"),
        (["--option", "exploding-gradient.factor=yes"], "expects float"),
        (["--option", "factor=1"], "--option expects RULE.KEY=VALUE"),
        (["--option", "no-such-rule.x=1"], "unknown rule 'no-such-rule'"),
        (["--select", "TA9999"], "unknown rule code"),
    ],
)
def test_bad_options_are_usage_errors(args, message):
    result = invoke(*args, str(RUN / "whoami.py"))
    assert result.exit_code == 2
    assert message in result.stderr


def test_bad_config_is_a_usage_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nselectt = ["TA701"]\n')
    (tmp_path / "s.py").write_text("print('hi')\n")
    result = invoke(str(tmp_path / "s.py"))
    assert result.exit_code == 2 and "unknown key" in result.stderr and "hi" not in result.output


def test_missing_script_and_module():
    assert invoke(str(RUN / "nope.py")).exit_code == 2
    result = invoke("-m", "no_such_module_xyz")
    assert result.exit_code == 2 and "No module named" in result.stderr


def test_option_values_are_toml():
    assert parse_option_flags(("a-b.x=20", "a-b.y=1e-3", "c.z=true", 'c.s="hi"', "c.t=word")) == {
        "a-b": {"x": 20, "y": 0.001}, "c": {"z": True, "s": "hi", "t": "word"},
    }


def test_lint_does_not_import_the_run_command():
    code = ("import sys; from torch_audit.cli import main\n"
            "try:\n    main(['lint', '--no-cache', 'whoami.py'])\n"
            "except SystemExit: pass\n"
            "assert 'torch' not in sys.modules and 'torch_audit.runtime.run_command' not in sys.modules\n")
    result = py("-c", code)
    assert result.returncode == 0, result.stderr


def test_output_paths_are_resolved_before_the_script_chdirs(tmp_path):
    # issue 18 item 4: -o and --html name files relative to where torch-audit was started,
    # not wherever the script moved to
    audited = ta("--output-format", "json", "-o", "out.json", "--html", "rep.html",
                 str(RUN / "chdirs.py"), "elsewhere", cwd=tmp_path)
    assert audited.returncode == 0, audited.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == []
    assert "<svg" in (tmp_path / "rep.html").read_text()
    assert not (tmp_path / "elsewhere" / "out.json").exists()
    assert not (tmp_path / "elsewhere" / "rep.html").exists()


# -- issue 19 item 5: say what did not run, never "All checks passed!" after nothing was checked


def test_a_hand_written_update_is_not_called_all_checks_passed():
    result = invoke(str(RUN / "manual_sgd.py"))
    assert result.exit_code == 0
    assert SUMMARY_OK not in result.output
    assert "no torch.optim optimizer stepped" in result.output
    assert "No findings, but the checks at optimizer.step() did not run" in result.output


def test_a_script_that_crashed_before_its_first_step_says_so():
    result = invoke(str(RUN / "crash_early.py"))
    assert result.exit_code == 1
    assert SUMMARY_OK not in result.output
    assert "the script raised FileNotFoundError before the first optimizer step" in result.output


def test_max_steps_without_an_optimizer_says_it_never_fired(tmp_path):
    out = tmp_path / "r.json"
    result = invoke("--max-steps", "2", "--output-format", "json", "-o", str(out),
                    str(RUN / "manual_sgd.py"))
    assert result.exit_code == 0
    assert json.loads(out.read_text()) == []
    # also for a machine format: the note goes to stderr
    assert "--max-steps 2 never fired: it counts torch.optim optimizer steps" in result.output


def test_run_replaces_no_torch_object_for_its_charts_and_progress_line():
    # issue 19 item 1: the status line and the --html loss chart took the loss from a wrapper
    # put in place of torch.autograd.backward
    import torch

    seen = {}
    original = torch.autograd.backward

    class Spy(io.StringIO):
        def write(self, text):
            seen.setdefault("identity", torch.autograd.backward is original)
            return super().write(text)

    outcome = audit_script(str(RUN / "forever.py"), max_steps=3, progress=Spy(), history=True)
    assert seen == {"identity": True}
    assert [v for _, v in outcome.history.loss]  # the loss was still charted
