"""The Lightning callback against a real ``lightning`` Trainer: tiny model, CPU, 3 steps."""

from __future__ import annotations

import csv
import logging
import warnings

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from torch_audit.integrations.lightning import AuditCallback  # noqa: E402
from torch_audit.runtime.errors import AuditFailure  # noqa: E402
from torch_audit.runtime.session import active_session  # noqa: E402


class Classifier(L.LightningModule):
    def __init__(self, bug: str | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
        self.bug = bug

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        if self.bug == "softmax":  # the planted bug: probabilities into cross_entropy
            logits = F.softmax(logits, dim=-1)
        loss = F.cross_entropy(logits, y)
        if self.bug == "nan":
            loss = loss * torch.tensor(float("nan"))
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    y = torch.randint(0, 3, (48,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def fit(model, callback, tmp_path, logger=False, max_steps=3):
    torch.manual_seed(0)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=logger,
        callbacks=[callback],
        limit_val_batches=1,
        num_sanity_val_steps=1,
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice about num_workers and the like
        trainer.fit(model, loader(), loader())
    return trainer


def test_clean_fit_is_silent(tmp_path):
    cb = AuditCallback()
    fit(Classifier(), cb, tmp_path)
    assert cb.findings == []
    assert active_session() is None and cb.session is None


def test_planted_bug_is_found_logged_and_mapped_to_the_lightning_logger(tmp_path, caplog):
    from lightning.pytorch.loggers import CSVLogger

    cb = AuditCallback()
    logger = CSVLogger(tmp_path, name="run", version=0)
    with caplog.at_level(logging.WARNING, logger="lightning.pytorch.torch_audit"):
        fit(Classifier(bug="softmax"), cb, tmp_path, logger=logger)
    codes = {f.code for f in cb.findings}
    assert codes == {"TA707"}, cb.findings
    (finding,) = cb.findings
    assert finding.step is not None and finding.count >= 1
    # the Python logger saw it as it happened, the Lightning logger got the counts
    assert any("TA707" in r.getMessage() for r in caplog.records)
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    audit_rows = [r for r in rows if r.get("torch_audit/findings")]
    assert audit_rows and float(audit_rows[-1]["torch_audit/findings"]) == 1.0
    assert float(audit_rows[-1]["torch_audit/TA707"]) >= 1.0
    assert active_session() is None


def test_fail_fast_stops_the_fit_and_cleans_up(tmp_path):
    cb = AuditCallback(fail_fast=True)
    model = Classifier(bug="nan")
    with pytest.raises(AuditFailure) as info:
        fit(model, cb, tmp_path, max_steps=10)
    assert info.value.finding.code == "TA701"
    assert info.value.finding.step == 0 or info.value.finding.step == 1
    assert active_session() is None and cb.session is None
    # the failure came at the first step, not after 10
    assert cb.findings and min(f.step for f in cb.findings) <= 1


def test_fail_on_level_raises_at_the_end(tmp_path):
    cb = AuditCallback(fail_on="error")
    with pytest.raises(AuditFailure):
        fit(Classifier(bug="softmax"), cb, tmp_path)
    assert [f.code for f in cb.findings] == ["TA707"]
    assert active_session() is None


def test_a_foreign_exception_closes_the_session(tmp_path):
    class Boom(Classifier):
        def training_step(self, batch, batch_idx):
            if batch_idx == 1:
                raise ValueError("boom")
            return super().training_step(batch, batch_idx)

    cb = AuditCallback()
    with pytest.raises(ValueError, match="boom"):
        fit(Boom(), cb, tmp_path)
    assert active_session() is None and cb.session is None


def test_select_and_bad_arguments():
    with pytest.raises(ValueError):
        AuditCallback(fail_on="sometimes")
    with pytest.raises(ValueError):
        AuditCallback(every=0)
    assert isinstance(AuditCallback(select=["TA7"]), L.Callback)
