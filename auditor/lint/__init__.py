"""The static engine. Nothing under this package may import torch."""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect no garbage inside the block. Loading the linter (libcst's node classes, the rule
    catalogue) allocates a few hundred thousand objects that all live until exit, and no garbage:
    the collections it would trigger find nothing and cost 10-20 ms of start-up."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
