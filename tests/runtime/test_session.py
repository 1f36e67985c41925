"""The session's contract: hooks in and out, no strong references, refusal of nesting,
internal errors, fail_fast, do-no-harm, selection and options."""

from __future__ import annotations

import copy
import gc
import json
import subprocess
import sys
import threading
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
from torch_audit.findings import Finding
from torch_audit.runtime import AuditError, AuditFailure, SessionActiveError
from torch_audit.runtime.session import active_session

from harness import RUNTIME_FIXTURES as FIXTURES, run_fixture


def _global_hook_counts():
    from torch.nn.modules import module as m
    from torch.optim import optimizer as o

    return (
        len(m._global_forward_hooks),
        len(m._global_forward_pre_hooks),
        len(m._global_backward_hooks),
        len(o._global_optimizer_pre_hooks),
        len(o._global_optimizer_post_hooks),
    )


def _patched_functions():
    return (
        torch.autograd.backward,
        F.cross_entropy,
        F.relu,
        torch.optim.Optimizer.zero_grad,
        torch.nn.Module.zero_grad,
    )


def _train(model, opt, steps=2, batch=16, fin=8):
    for _ in range(steps):
        x, y = torch.randn(batch, fin), torch.randn(batch, 1)
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()


def _mlp():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))


def _mode_stack_len():
    return torch._C._len_torch_function_stack()


def _monitoring_tools() -> list[str]:
    """The sys.monitoring tools in use (Python 3.12+; none before)."""
    mon = getattr(sys, "monitoring", None)
    return [] if mon is None else [t for t in (mon.get_tool(i) for i in range(6)) if t]


def _window_open() -> bool:
    """Whether the running session's call window is open (observing the loss and backward)."""
    return active_session()._hooks.window.is_open


def test_hooks_are_installed_and_removed():
    before, funcs = _global_hook_counts(), _patched_functions()
    with torch_audit.audit() as session:
        assert _global_hook_counts() != before
        assert _patched_functions() == funcs  # nothing public is replaced, ever
        model = _mlp()
        _train(model, torch.optim.SGD(model.parameters(), lr=0.1))
        model(torch.randn(2, 8))
        assert _window_open()  # the call window: open after a forward
    assert _global_hook_counts() == before
    assert _patched_functions() == funcs
    assert _mode_stack_len() == 0
    assert _monitoring_tools() == []
    assert session.findings == []


def test_hooks_removed_when_the_block_raises():
    before, funcs = _global_hook_counts(), _patched_functions()
    with pytest.raises(ZeroDivisionError):
        with torch_audit.audit():
            model = _mlp()
            _train(model, torch.optim.SGD(model.parameters(), lr=0.1))
            model(torch.randn(2, 8))
            1 / 0
    assert _global_hook_counts() == before
    assert _patched_functions() == funcs
    assert _mode_stack_len() == 0


def test_paused_removes_every_hook_and_keeps_the_session():
    before, funcs = _global_hook_counts(), _patched_functions()
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit(model, opt) as session:
        _train(model, opt)
        installed = _global_hook_counts()
        model(torch.randn(2, 8))
        assert _window_open()
        with session.paused():
            assert _global_hook_counts() == before
            assert (_mode_stack_len(), _monitoring_tools()) == (0, [])
            # nothing is observed while paused: a NaN loss goes unreported
            opt.zero_grad()
            (model(torch.randn(4, 8)).sum() * float("nan")).backward()
            model.zero_grad()
        assert _global_hook_counts() == installed
        assert _patched_functions() == funcs
        assert session.findings == []
        # resumed with its state: the step counter continues and a NaN is seen again
        _train(model, opt, steps=1)
        assert session.step == 3
        opt.zero_grad()
        (model(torch.randn(4, 8)).sum() * float("nan")).backward()
        opt.step()
    assert "nonfinite-loss" in {f.name for f in session.findings}
    assert _global_hook_counts() == before
    assert _patched_functions() == funcs


def test_paused_needs_a_running_session_and_does_not_nest():
    session = torch_audit.audit()
    with pytest.raises(RuntimeError, match="running session"):
        with session.paused():
            pass
    with session:
        with session.paused():
            with pytest.raises(RuntimeError, match="already paused"):
                with session.paused():
                    pass
    with pytest.raises(RuntimeError, match="running session"):
        with session.paused():
            pass


def test_only_needed_hooks_are_installed():
    model = _mlp()
    with torch_audit.audit(select=["nonfinite-gradient"]):
        model(torch.randn(2, 8))
        # nonfinite-gradient needs optimizer hooks only: no call window
        assert active_session()._hooks.window is None
        assert (_mode_stack_len(), _monitoring_tools()) == (0, [])
    with torch_audit.audit(select=["nonfinite-loss"]):
        assert not _window_open()  # opened by a forward's end only
        model(torch.randn(2, 8))
        assert _window_open()


def test_no_strong_reference_to_model_after_exit():
    with torch_audit.audit() as session:
        model = _mlp()
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        _train(model, opt)
        x = torch.ones(3, 8, requires_grad=True)
        model(x).sum().backward()
    refs = [weakref.ref(model), weakref.ref(opt), weakref.ref(x)]
    del model, opt, x
    gc.collect()
    assert all(r() is None for r in refs)
    assert session.findings is not None


def test_no_strong_reference_after_model_argument_and_exception():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError):
        with torch_audit.audit(model, opt):
            _train(model, opt)
            raise RuntimeError("boom")
    ref = weakref.ref(model)
    del model, opt
    gc.collect()
    assert ref() is None


def test_nested_session_is_refused():
    with torch_audit.audit():
        with pytest.raises(SessionActiveError, match="already active"):
            with torch_audit.audit():
                pass
    # and the outer one cleaned up properly
    with torch_audit.audit():
        pass


def test_concurrent_session_in_another_thread_is_refused():
    errors = []
    entered, release = threading.Event(), threading.Event()

    def other():
        with torch_audit.audit():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(10)
    try:
        with torch_audit.audit():
            pass
    except SessionActiveError as e:
        errors.append(e)
    finally:
        release.set()
        t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], AuditError)


def test_a_session_object_cannot_be_reused():
    session = torch_audit.audit()
    with session:
        pass
    with pytest.raises(SessionActiveError):
        with session:
            pass


def test_internal_error_becomes_finding_and_disables_the_check(monkeypatch):
    from torch_audit.rules.runtime.nonfinite_gradient import NonFiniteGradient

    calls = []

    def broken(self, ctx):
        calls.append(ctx.step)
        raise ValueError("kaputt")

    monkeypatch.setattr(NonFiniteGradient, "on_step_pre", broken)
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit() as session:
        _train(model, opt, steps=3)
    assert calls == [0]  # disabled after the first failure
    [f] = session.findings
    assert (f.code, f.name, f.severity.value) == ("TA799", "runtime-internal-error", "warning")
    assert "nonfinite-gradient" in f.message and "kaputt" in f.message
    assert f.help and "report it" in f.help.lower()
    assert "  = help: " in session.report()  # the linter's help line (one renderer)


@pytest.mark.parametrize("kwargs, reported", [
    ({"ignore": ["TA799"]}, False),
    ({"ignore": ["runtime-internal-error"]}, False),
    ({"select": ["nonfinite-gradient"], "ignore": ["TA7"]}, False),  # the narrower select wins
    ({"select": ["nonfinite-gradient"]}, True),  # reported although not selected
    ({"ignore": ["TA79"], "extend_select": ["TA799"]}, True),
])
def test_internal_error_can_be_ignored(monkeypatch, kwargs, reported):
    from torch_audit.rules.runtime.nonfinite_gradient import NonFiniteGradient

    monkeypatch.setattr(NonFiniteGradient, "on_step_pre", lambda self, ctx: 1 / 0)
    model = _mlp()
    with torch_audit.audit(config=False, **kwargs) as session:
        _train(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert [f.code for f in session.findings] == (["TA799"] if reported else [])


def _nan_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    x[0, 0] = float("nan")
    return model, opt, x


def test_fail_fast_raises_before_the_step_applies_nan():
    model, opt, x = _nan_model()
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(AuditFailure) as info:
        with torch_audit.audit(fail_fast=True):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    assert info.value.finding.code == "TA701"  # the loss, read with the step's flags
    assert isinstance(info.value, AuditError)
    for w, p in zip(weights, model.parameters()):
        assert torch.equal(w, p)  # the NaN never reached the weights


def test_without_fail_fast_the_same_run_only_reports():
    model, opt, x = _nan_model()
    with torch_audit.audit() as session:
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    assert set(session.codes) == {"TA701", "TA702", "TA703", "TA704"}
    act = next(f for f in session.findings if f.code == "TA704")
    assert act.module == "0" and "Linear" in act.message
    assert act.path.endswith("test_session.py")  # the line that called the module
    assert {f.step for f in session.findings} == {0}


def _train_seeded(audited: bool, steps: int = 20):
    torch.manual_seed(1234)
    model = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    crit = nn.CrossEntropyLoss()

    def loop():
        for _ in range(steps):
            x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
            opt.zero_grad()
            crit(model(x), y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    if audited:
        with torch_audit.audit(select=["ALL"], preview=True):
            loop()
    else:
        loop()
    return model, opt, torch.get_rng_state()


def test_do_no_harm_bitwise_identical_after_20_steps():
    m1, o1, rng1 = _train_seeded(False)
    m2, o2, rng2 = _train_seeded(True)
    assert torch.equal(rng1, rng2)
    for (n1, a), (n2, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b), n1
    s1, s2 = o1.state_dict()["state"], o2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        for key in s1[k]:
            assert torch.equal(torch.as_tensor(s1[k][key]), torch.as_tensor(s2[k][key])), (k, key)


def test_select_ignore_and_unknown_selectors():
    bad = FIXTURES / "gradients_not_cleared" / "bad.py"
    assert run_fixture(bad, select=["TA8"]).codes == ["TA804"]
    assert run_fixture(bad, select=["ALL"], ignore=["gradients-not-cleared"]).codes == []
    from torch_audit.catalog import UnknownSelector

    with pytest.raises(UnknownSelector):
        torch_audit.audit(select=["TA999"])


def test_options_by_name_and_keyword_and_validation():
    bad = FIXTURES / "dead_activations" / "bad.py"
    assert run_fixture(bad, select=["dead-activations"]).codes == ["TA709"]
    # a stricter threshold than the 94% dead units: silent
    s = run_fixture(bad, select=["dead-activations"], options={"dead-activations": {"threshold": 0.99}})
    assert s.codes == []
    s = run_fixture(bad, select=["TA709"], dead_activations={"threshold": 0.99})
    assert s.codes == []
    with pytest.raises(ValueError, match="unknown option 'treshold'"):
        torch_audit.audit(options={"dead-activations": {"treshold": 0.5}})
    with pytest.raises(ValueError, match="unknown runtime check"):
        torch_audit.audit(options={"no-such-check": {}})
    with pytest.raises(TypeError, match="expects"):
        torch_audit.audit(options={"TA709": {"window": "two"}})
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        torch_audit.audit(bogus=3)
    with pytest.raises(ValueError, match="every"):
        torch_audit.audit(every=0)


def _settings(**kwargs) -> tuple[list[str], dict]:
    """The checks a session runs and exploding-gradient's options (None when not selected)."""
    with torch_audit.audit(**kwargs) as session:
        codes = [c.code for c in session.checks]
        opts = next((dict(c.opts) for c in session.checks if c.code == "TA705"), None)
    return codes, opts


PYPROJECT = """
[project]
name = "x"

[tool.torch-audit]
select = ["TA7"]           # the linter's keys are read too, and ignored here
ignore = ["nonfinite-activation"]
preview = true
torch-version = "2.4"

[tool.torch-audit.options.exploding-gradient]
factor = 20.0
window = 7

[tool.torch-audit.options.TA104]   # a static rule's options: the linter's business
"""


def test_settings_come_from_the_nearest_pyproject(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src" / "pkg")  # found from the working directory upwards
    codes, opts = _settings()
    # TA7 with preview: the preview checks TA710 and TA712 too; not the opt-in TA711
    assert codes == ["TA701", "TA702", "TA703", "TA705", "TA706", "TA707", "TA708", "TA709", "TA710", "TA712"]
    assert (opts["factor"], opts["window"]) == (20.0, 7)


def test_keyword_arguments_take_precedence_over_the_pyproject(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(tmp_path)
    codes, opts = _settings(select=["TA705", "TA710", "TA704"], ignore="TA710",
                            exploding_gradient={"factor": 3.0})
    # select starts afresh (the file's ignore of TA704 no longer counts), as `lint --select` does
    assert codes == ["TA704", "TA705"]
    codes, _ = _settings(ignore="TA710")  # without select the keywords adjust the file's choice
    assert "TA704" not in codes and "TA710" not in codes and "TA705" in codes
    codes, _ = _settings(extend_select=["nonfinite-activation"])  # the keyword beats the file
    assert "TA704" in codes
    assert (opts["factor"], opts["window"]) == (3.0, 7)  # key by key
    codes, opts = _settings(options={"TA705": {"window": 9}}, exploding_gradient={"factor": 4.0})
    assert (opts["factor"], opts["window"]) == (4.0, 9)
    codes, _ = _settings(preview=False, extend_select=["TA711"])  # TA711: opt-in, named
    assert "TA710" not in codes and "TA711" in codes and "TA705" in codes


def test_config_false_reads_no_file_and_config_path_reads_that_one(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(tmp_path)
    default_codes, default_opts = _settings(config=False)
    assert "TA704" in default_codes and "TA710" not in default_codes
    assert default_opts["factor"] == 10.0
    other = tmp_path / "elsewhere" / "torch-audit.toml"
    other.parent.mkdir()
    other.write_text('select = ["exploding-gradient"]\n[options.exploding-gradient]\nfactor = 50.0\n')
    monkeypatch.chdir(other.parent)
    assert _settings(config=other) == (["TA705"], {**default_opts, "factor": 50.0})
    assert _settings(config=str(tmp_path / "pyproject.toml"))[1]["factor"] == 20.0


@pytest.mark.parametrize("table, message", [
    ("[tool.torch-audit.options.exploding-gradient]\nfactor = \"big\"",
     "tool.torch-audit.options.exploding-gradient.factor: "),
    ("[tool.torch-audit]\nselekt = [\"TA7\"]", "tool.torch-audit.selekt: unknown key (did you mean 'select'?)"),
    ("[tool.torch-audit]\nselect = [\"TA7\"", "invalid TOML"),
    ("[tool.torch-audit]\nignore = [\"no-such-check\"]", "tool.torch-audit.ignore: "),
])
def test_a_bad_pyproject_is_one_clear_error(tmp_path, monkeypatch, table, message):
    import traceback

    from torch_audit.config import ConfigError

    (tmp_path / "pyproject.toml").write_text(table + "\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        torch_audit.audit()
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'pyproject.toml'}: ") and message in text, text
    assert "\n" not in text
    # raised from audit() itself: no chained exception, no frames of the loader
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert traceback.extract_tb(info.tb)[-1].name == "audit"
    with pytest.raises(ConfigError, match="configuration file not found"):
        torch_audit.audit(config=tmp_path / "missing.toml")
    torch_audit.audit(config=False)  # the way around a file one cannot fix


def test_every_n_skips_numeric_checks_between():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    syncs = []
    orig = torch.Tensor.tolist

    def counting(self):
        syncs.append(1)
        return orig(self)

    with torch_audit.audit(select=["nonfinite-gradient"], every=3):
        torch.Tensor.tolist = counting
        try:
            _train(model, opt, steps=7, fin=4)
        finally:
            torch.Tensor.tolist = orig
    assert len(syncs) == 3  # steps 0, 3, 6


def test_findings_are_deduplicated_with_count_and_first_step():
    bad = FIXTURES / "gradients_not_cleared" / "bad.py"
    [f] = run_fixture(bad, select=["TA804"]).findings
    assert (f.step, f.count) == (1, 2)
    assert "SGD" in f.message


def test_report_and_json():
    session = run_fixture(FIXTURES / "unused_parameter" / "bad.py")
    text = session.report()
    assert "TA803" in text and "skip" in text and text.endswith("Found 1 runtime finding.")
    data = json.loads(session.to_json())
    assert data[0]["code"] == "TA803" and data[0]["module"] == "skip" and data[0]["step"] == 0
    assert Finding.from_dict(data[0]).message == session.findings[0].message
    assert data[0]["path"].endswith("unused_parameter/bad.py") and data[0]["line"] > 1


def test_model_argument_restricts_the_audit():
    torch.manual_seed(0)
    watched = nn.Linear(4, 1)
    extra = nn.Linear(4, 1)  # gets gradients, in no optimizer, but not the audited model
    opt = torch.optim.SGD(watched.parameters(), lr=0.1)
    with torch_audit.audit(watched, opt) as session:
        for _ in range(2):
            opt.zero_grad()
            x = torch.randn(8, 4)
            (watched(x) + extra(x)).sum().backward()
            opt.step()
    assert session.findings == []
    with torch_audit.audit() as session:
        opt.zero_grad()
        x = torch.randn(8, 4)
        (watched(x) + extra(x)).sum().backward()
        opt.step()
    assert "TA802" in session.codes


def test_an_optimizer_rebuilt_without_the_body_is_reported_after_the_old_one_is_gone():
    """The old optimizer held every parameter; the new one, over the head only, replaces it
    while the body still gets gradients: the body is in no optimizer from then on."""
    torch.manual_seed(0)
    body, head = nn.Linear(4, 8), nn.Linear(8, 1)
    model = nn.Sequential(body, nn.ReLU(), head)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit(config=False) as session:
        for step in range(12):
            if step == 5:
                opt = torch.optim.SGD(head.parameters(), lr=0.1)
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
    [finding] = [f for f in session.findings if f.code == "TA802"]
    # the old optimizer lives on until the parameter read deferred at its last step is done,
    # at the new one's first step: the body counts as in no optimizer from the second on
    assert finding.module == "0" and finding.step == 1
    assert "0.weight" in finding.message and "0.bias" in finding.message


def test_index_follows_changes_to_known_modules_only():
    """The model index rebuilds after a known module changed, not when unrelated modules are
    built; one model keeps unprefixed names, roots of one class get numbered labels."""
    model = nn.Sequential(nn.Linear(4, 4))
    with torch_audit.audit() as session:
        model(torch.randn(2, 4))
        index = session.index
        version = index.version
        nn.Sequential(nn.Linear(4, 4), nn.ReLU())  # built, not attached: nothing to rebuild
        assert index.version == version and index.name(model[0]) == "0"
        model.append(nn.Linear(4, 2))
        assert index.name(model[1]) == "1" and index.version == version + 1
        model[0].weight = model[0].weight  # put back where it was (as FSDP does): no rebuild
        model[1] = model[1]
        assert index.version == version + 1
        model[0].weight = nn.Parameter(torch.zeros(4, 4))
        assert index.param_name(model[0].weight) == "0.weight" and index.version == version + 2
        other, third = nn.Sequential(nn.Linear(4, 4)), nn.Linear(4, 4)
        other(torch.randn(2, 4))
        third(torch.randn(2, 4))
        names = [index.name(m) for m in (model, model[1], other, other[0], third)]
    assert names == ["Sequential", "Sequential.1", "Sequential#2", "Sequential#2.0", "Linear"]


def test_catalogue_listing_stays_torch_free():
    code = (
        "import sys; from torch_audit.catalog import load_catalog; "
        "c = load_catalog(); assert len(c.of_kind('runtime')) >= 19; "
        "import torch_audit.runtime, torch_audit.runtime.check; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class _Standardize(nn.Module):
    def forward(self, x):
        centred = x - x.mean(1, keepdim=True)
        return centred / x.std(1, keepdim=True)  # the division that makes 0/0


def _standardize_run(**opts):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), _Standardize(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit(select=["nonfinite-activation"], **opts) as session:
        for step in range(3):
            x = torch.randn(8, 4)
            if step >= 1:  # from now on the first layer outputs constant rows
                with torch.no_grad():
                    model[0].weight.zero_()
                    model[0].bias.fill_(1.0)
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    return session


def test_nonfinite_activation_names_the_custom_module_and_its_class():
    [f] = _standardize_run().findings
    assert f.code == "TA704" and f.module == "1" and "_Standardize" in f.message
    assert f.step == 1
    assert f.path.endswith("test_session.py")
    assert "class _Standardize" in open(f.path).read().splitlines()[f.line - 1]


def test_nonfinite_activation_precise_mode_names_the_operation_and_line():
    session = _standardize_run(options={"nonfinite-activation": {"precise": True}})
    precise = [f for f in session.findings if "precise" in f.message]
    assert len(precise) == 1
    f = precise[0]
    assert "div" in f.message
    assert "return centred / x.std" in open(f.path).read().splitlines()[f.line - 1]
