"""Keep ``torch-audit run``'s own start-up out of the script's garbage collections.

Before the script starts, ``torch-audit run`` has imported click, its own modules and the
checks (about 60 modules more than ``python script.py``). Their objects advance the
collector's generation counts, and the script's first full collection, which walks every
object of torch's heap (about 0.1 s on CPU builds), comes earlier than under plain python: in
pytorch/examples' regression it fell inside the run instead of at exit, 4% of the script.

So the objects that exist when the script starts (torch's, torch-audit's and the session's,
which live until the end anyway) are moved to the permanent generation with
:func:`gc.freeze` and put back with :func:`gc.unfreeze` when the script ends, before the report,
so the interpreter's final collection walks them as it would under plain python. The script's
own objects are collected as usual. Two things differ from plain python while the script
runs, both documented in ``docs/run.md``: ``gc.get_objects()`` does not list the frozen
objects, and a full collection does not walk them (it is cheaper). When something froze objects
before (an embedding process), nothing is frozen or unfrozen here. Python 3.12 freezes objects
of its own at start-up (its immortal ones): ``torch-audit run`` records how many before it does
anything (:func:`record_interpreter_frozen`), and those alone do not count as someone else's;
they are unfrozen with the rest when the script ends, shortly before the process exits.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

__all__ = ["record_interpreter_frozen", "startup_frozen"]

#: objects the interpreter itself had frozen when ``torch-audit run`` started (None: not
#: recorded, so any frozen object may be an embedding process's)
_interpreter_frozen: int | None = None


def record_interpreter_frozen() -> None:
    """Called first by ``torch-audit run``, whose process nothing else has frozen objects in:
    what is frozen now is the interpreter's own (Python 3.12)."""
    global _interpreter_frozen
    _interpreter_frozen = gc.get_freeze_count()


@contextmanager
def startup_frozen() -> Iterator[None]:
    frozen = gc.get_freeze_count()
    if frozen and (_interpreter_frozen is None or frozen > _interpreter_frozen):
        yield  # someone else's frozen objects: leave their state alone
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
