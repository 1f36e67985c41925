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
before (an embedding process), nothing is frozen or unfrozen here.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

__all__ = ["startup_frozen"]


@contextmanager
def startup_frozen() -> Iterator[None]:
    if gc.get_freeze_count():  # someone else's frozen objects: leave their state alone
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
