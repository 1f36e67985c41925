"""PyTorch Lightning: ``AuditCallback`` runs a torch-audit runtime session for ``Trainer.fit``.

```python
import lightning as L
from torch_audit.integrations.lightning import AuditCallback

trainer = L.Trainer(callbacks=[AuditCallback(fail_on="error")])
trainer.fit(model, datamodule)
```

The session starts at ``on_fit_start`` (after Lightning has set up the model and optimizers)
restricted to the ``LightningModule``, and ends at ``on_fit_end`` or ``on_exception``. New
findings go to the ``lightning.pytorch`` Python logger as they appear (on global rank zero);
at the end of the fit their counts are logged to every Lightning logger as metrics
``torch_audit/findings`` and ``torch_audit/<CODE>``. ``fail_fast=True`` stops the fit at the
first error finding (the session raises :class:`~torch_audit.runtime.errors.AuditFailure`
inside the step, Lightning tears down and re-raises it from ``fit``); ``fail_on="warning"``
raises ``AuditFailure`` at the end of the fit when any finding is at or above the level.

Works with ``lightning`` (``lightning.pytorch``) and with the standalone ``pytorch_lightning``
package: the callback derives from whichever is installed (``lightning`` first). To use the
other one, build a class with :func:`make_callback`.
"""

from __future__ import annotations

import logging
from typing import Any

from torch_audit.integrations.session_owner import SessionOwner, log_finding

__all__ = ["AuditCallback", "make_callback"]


def _base() -> type:
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:
        try:
            from pytorch_lightning.callbacks import Callback
        except ImportError:
            raise ImportError(
                "torch_audit.integrations.lightning needs Lightning: pip install 'torch-audit[lightning]'"
            ) from None
    return Callback


# The callback class is built here because it must derive from whichever Lightning base class
# is installed (lightning or pytorch_lightning).
# long: 107 lines of complexity 1, one class statement
def make_callback(base: type) -> type:
    """An ``AuditCallback`` class deriving from ``base`` (a Lightning ``Callback`` class)."""

    class AuditCallback(base):  # type: ignore[misc, valid-type]
        """Audit ``Trainer.fit`` with a torch-audit runtime session.

        Arguments are those of :func:`torch_audit.audit` (``select``, ``ignore``,
        ``extend_select``, ``every``, ``fail_fast``, ``preview``, ``options``, ``config``) plus
        ``fail_on`` (a severity, or ``None``), ``log_findings`` (send new findings to the Python
        logger as they appear) and ``print_report`` (print the session's report at the end of
        the fit on rank zero). After the fit, ``callback.findings`` holds the findings."""

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
            super().__init__()
            self._owner = SessionOwner(
                select=select, ignore=ignore, every=every, fail_fast=fail_fast,
                preview=preview, options=options, fail_on=fail_on,
                extend_select=extend_select, config=config,
            )
            self.log_findings = log_findings
            self.print_report = print_report
            self._logger = logging.getLogger("lightning.pytorch.torch_audit")

        # -- state ----------------------------------------------------------------------------
        @property
        def findings(self) -> list:
            owner = self._owner
            return list(owner.session.findings) if owner.session is not None else list(owner.findings)

        @property
        def session(self) -> Any:
            """The running session during ``fit`` (None otherwise)."""
            return self._owner.session

        # -- hooks ----------------------------------------------------------------------------
        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self._owner.start(pl_module)

        def _flush_logs(self, trainer: Any) -> None:
            fresh = self._owner.new_findings()
            if self.log_findings and getattr(trainer, "is_global_zero", True):
                for f in fresh:
                    log_finding(self._logger, f)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if self._owner.active:
                self._flush_logs(trainer)

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            if not self._owner.active:
                return
            try:
                self._owner.close()
            finally:
                self._report(trainer)
            failures = self._owner.failures()
            if failures:
                from torch_audit.runtime.errors import AuditFailure

                raise AuditFailure(failures[0])

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            if self._owner.active:
                self._owner.close(exception)
                self._report(trainer)

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if self._owner.active:  # a fit that ended without on_fit_end/on_exception
                self._owner.close(RuntimeError("fit did not finish"))

        def _report(self, trainer: Any) -> None:
            self._flush_logs(trainer)
            findings = self._owner.findings
            if not getattr(trainer, "is_global_zero", True):
                return
            metrics: dict[str, float] = {"torch_audit/findings": float(len(findings))}
            for f in findings:
                key = f"torch_audit/{f.code}"
                metrics[key] = metrics.get(key, 0.0) + float(f.count)
            step = int(getattr(trainer, "global_step", 0))
            for lg in getattr(trainer, "loggers", None) or []:
                try:
                    lg.log_metrics(metrics, step=step)
                except Exception as exc:  # a logger's problem must not fail the fit
                    self._logger.warning("torch-audit: could not log to %s: %s", type(lg).__name__, exc)
            if self.print_report:
                from torch_audit.runtime.text_report import format_text

                print(format_text(findings))

    AuditCallback.__module__ = __name__
    AuditCallback.__qualname__ = "AuditCallback"
    return AuditCallback


def __getattr__(name: str) -> Any:
    # Import Lightning only when the callback is asked for.
    if name == "AuditCallback":
        cls = make_callback(_base())
        globals()["AuditCallback"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
