"""``torch-audit run`` keeps its start-up objects out of the script's garbage collections and
gives them back when the script ends (auditor/runtime/startup_objects.py)."""

from __future__ import annotations

import gc
import textwrap

import pytest

from torch_audit.runtime.audited_run import audit_script

#: Python 3.12 freezes objects of its own at start-up (its immortal objects): a run started from
#: the API cannot tell them from an embedding process's and leaves the permanent generation
#: alone; ``torch-audit run`` counts them first (the last test here)
interpreter_freezes = pytest.mark.skipif(
    gc.get_freeze_count() > 0,
    reason="this interpreter starts with frozen objects of its own (Python 3.12): a run from the "
           "API freezes nothing; the command line's count of them is tested below")

SCRIPT = textwrap.dedent("""
    import gc, json, sys
    import torch
    seen = {"frozen": gc.get_freeze_count(), "oldest": gc.get_count()[2]}
    class Cycle:
        pass
    c = Cycle(); c.self = c  # the script's own garbage is still collected
    del c
    seen["collected"] = gc.collect()
    json.dump(seen, open(sys.argv[1], "w"))
    if len(sys.argv) > 2:
        raise RuntimeError("the script fails")
""")


def _run(tmp_path, *extra):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = tmp_path / "seen.json"
    outcome = audit_script(str(script), [str(out), *extra], audit_options={"config": False})
    import json

    return json.loads(out.read_text()), outcome


@interpreter_freezes
def test_the_script_starts_with_the_start_up_frozen_and_its_own_garbage_collected(tmp_path):
    assert gc.get_freeze_count() == 0
    seen, outcome = _run(tmp_path)
    assert outcome.status == 0
    assert seen["frozen"] > 1000  # torch's and torch-audit's objects
    assert seen["oldest"] == 0  # the generation counts start afresh
    assert seen["collected"] >= 1
    assert gc.get_freeze_count() == 0  # given back when the script ended


@interpreter_freezes
def test_given_back_when_the_script_raises(tmp_path):
    seen, outcome = _run(tmp_path, "fail")
    assert outcome.status == 1 and outcome.exception is not None
    assert seen["frozen"] > 1000
    assert gc.get_freeze_count() == 0


def test_objects_frozen_by_the_caller_stay_frozen(tmp_path):
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        _run(tmp_path)
        assert gc.get_freeze_count() > before * 0.9  # not given back (a few died meanwhile)
    finally:
        gc.unfreeze()


def test_the_interpreters_own_frozen_objects_do_not_stop_the_freeze(tmp_path, monkeypatch):
    """Python 3.12 starts with frozen objects of its own; ``torch-audit run`` records them
    before anything else, and they alone do not count as an embedding process's."""
    from torch_audit.runtime import startup_objects

    gc.freeze()  # as the interpreter does at start-up on 3.12 (a few hundred there)
    try:
        before = gc.get_freeze_count()
        monkeypatch.setattr(startup_objects, "_interpreter_frozen", before)
        seen, outcome = _run(tmp_path)
        assert outcome.status == 0
        assert seen["frozen"] > before  # the run froze its start-up too
        assert gc.get_freeze_count() == 0  # and gave everything back when the script ended
    finally:
        gc.unfreeze()
