"""Hugging Face ``transformers``: ``AuditCallback``, a ``TrainerCallback`` that runs a
torch-audit runtime session for ``Trainer.train``.

```python
from transformers import Trainer
from torch_audit.integrations.transformers import AuditCallback

trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[AuditCallback()])
trainer.train()
```

The session starts at ``on_train_begin`` restricted to the model and ends at
``on_train_end``. The Trainer hides a NaN or infinite loss from its logs by default
(``logging_nan_inf_filter=True`` replaces it by the running average); the session checks the
tensor ``backward()`` is called on, so such a loss is still reported (TA701
``nonfinite-loss``), and the non-finite gradients and parameters that follow it too.

New findings go to the ``transformers.torch_audit`` logger as they appear; on the main process
their count is added to each logs dict (``torch_audit/findings``, seen by the callbacks after
this one, such as the console printer) and, at the end, to ``trainer.state.log_history`` (saved
in ``trainer_state.json``) together with the count of each code.
``fail_fast=True`` stops training at the first error finding by raising
:class:`~torch_audit.runtime.errors.AuditFailure` from ``on_step_end`` (after closing the
session); ``fail_on="warning"`` raises it at the end of training when any finding is at or above
the level. The Trainer has no exception callback: if training raises, call
``callback.close()`` (the next ``train()`` also closes a leftover session).
"""

from __future__ import annotations

import logging
from typing import Any

from torch_audit.findings import Severity
from torch_audit.integrations.session_owner import SessionOwner, log_finding

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "torch_audit.integrations.transformers needs transformers: pip install 'torch-audit[transformers]'"
    ) from None

__all__ = ["AuditCallback"]


class AuditCallback(TrainerCallback):
    """Audit ``Trainer.train`` with a torch-audit runtime session.

    Arguments are those of :func:`torch_audit.audit` (``select``, ``ignore``, ``extend_select``,
    ``every``, ``fail_fast``, ``preview``, ``options``, ``config``) plus ``fail_on`` (a
    severity, or ``None``), ``log_findings`` (send new findings to the Python logger as they
    appear) and ``print_report`` (print the session's report at the end on the main process).
    After training, ``callback.findings`` holds the findings."""

    def __init__(
        self,
        *,
        select: Any = None,
        ignore: Any = None,
        every: int = 1,
        fail_fast: bool = False,
        preview: bool | None = None,
        options: Any = None,
        fail_on: Any = None,
        log_findings: bool = True,
        print_report: bool = False,
        extend_select: Any = None,
        config: Any = None,
    ) -> None:
        self._owner = SessionOwner(
            select=select, ignore=ignore, every=every, fail_fast=fail_fast,
            preview=preview, options=options, fail_on=fail_on,
            extend_select=extend_select, config=config,
        )
        self.fail_fast = fail_fast
        self.log_findings = log_findings
        self.print_report = print_report
        self._logger = logging.getLogger("transformers.torch_audit")
        self._main = True

    @property
    def findings(self) -> list:
        owner = self._owner
        return list(owner.session.findings) if owner.session is not None else list(owner.findings)

    @property
    def session(self) -> Any:
        return self._owner.session

    def close(self) -> None:
        """Close a session left open by a training run that raised."""
        self._owner.close(RuntimeError("training did not finish"))

    # -- TrainerCallback ---------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._main = bool(getattr(state, "is_world_process_zero", True))
        # fail_fast is ours (raised from on_step_end after a clean close), not the session's,
        # which would raise inside the optimizer step and leave the session open: the Trainer
        # has no exception callback. On CUDA, read flags every step then.
        self._owner.start(model, fail_fast=False, sync="step" if self.fail_fast else "auto")

    def _flush_logs(self) -> list:
        fresh = self._owner.new_findings()
        if self.log_findings and self._main:
            for f in fresh:
                log_finding(self._logger, f)
        return fresh

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._owner.active:
            return
        fresh = self._flush_logs()
        if self.fail_fast:
            errors = [f for f in fresh if f.severity is Severity.ERROR and f.code != "TA799"]
            if errors:
                self._owner.close(RuntimeError("stopped by fail_fast"))
                from torch_audit.runtime.errors import AuditFailure

                raise AuditFailure(errors[0])

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs is not None and self._main and self._owner.active:
            logs["torch_audit/findings"] = len(self._owner.session.findings)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._owner.active:
            return
        try:
            self._owner.close()
        finally:
            self._flush_logs()
            if self._main:
                entry: dict[str, Any] = {"torch_audit/findings": len(self._owner.findings)}
                for f in self._owner.findings:
                    key = f"torch_audit/{f.code}"
                    entry[key] = entry.get(key, 0) + f.count
                entry["step"] = getattr(state, "global_step", 0)
                state.log_history.append(entry)
            if self.print_report and self._main:
                from torch_audit.runtime.text_report import format_text

                print(format_text(self._owner.findings))
        failures = self._owner.failures()
        if failures:
            from torch_audit.runtime.errors import AuditFailure

            raise AuditFailure(failures[0])
