"""ModelIndex.add_root runs before every outermost forward: its shortcut for the model it saw
last must not outlive a rebuild that dropped that model."""

from __future__ import annotations

import torch

from torch_audit.runtime.model_index import ModelIndex


def test_the_same_root_again_keeps_its_names():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    index = ModelIndex()
    index.add_root(model)
    version = index.version
    index.add_root(model)
    assert index.version == version  # nothing rebuilt
    assert index.name(model[0]) == "0"
    assert index.roots() == [model]


def test_a_module_dropped_by_a_rebuild_becomes_a_root_again():
    inner = torch.nn.Linear(2, 2)
    outer = torch.nn.Sequential(inner)
    index = ModelIndex()
    index.add_root(inner)
    index.add_root(outer)  # absorbs inner
    index.add_root(inner)  # known, as outer's "0"
    assert index.name(inner) == "0"
    replacement = torch.nn.Linear(2, 2)
    index.registered(outer, "0", replacement)  # what the global registration hook reports
    outer[0] = replacement
    assert not index.knows(inner)  # the lookup rebuilt the index without it
    index.add_root(inner)
    assert index.knows(inner)
    assert index.name(inner) == "Linear"
    assert inner in index.roots()


def test_clear_forgets_the_last_root():
    model = torch.nn.Linear(2, 2)
    index = ModelIndex()
    index.add_root(model)
    index.clear()
    index.add_root(model)
    assert index.roots() == [model]


def test_a_model_the_script_drops_is_not_kept_alive():
    # a root is its own root and a parent holds its children: held as values of weak-key
    # tables they kept their keys, and the whole model, alive until the session ended
    import gc
    import weakref

    import torch
    from torch import nn

    import torch_audit

    first = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    dropped = weakref.ref(first)
    with torch_audit.audit(config=False, select=["cross-entropy-single-class"]) as session:
        first(torch.randn(2, 4)).sum().backward()
        assert session.index.root_of(first[0]) is first and session.index.parent(first[1]) is first
        del first
        second = nn.Linear(4, 1)  # a second stage's new model
        second(torch.randn(2, 4)).sum().backward()
        gc.collect()
        assert dropped() is None
        assert session.index.roots() == [second]
