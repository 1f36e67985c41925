"""The Hugging Face callback against a real ``transformers.Trainer``: a tiny BERT built from a
config (no downloads), CPU, 3 steps."""

from __future__ import annotations

import logging
import math
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from torch_audit.integrations.transformers import AuditCallback  # noqa: E402
from torch_audit.runtime.errors import AuditFailure  # noqa: E402
from torch_audit.runtime.session import active_session  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class Rows(torch.utils.data.Dataset):
    """Token ids and labels; ``ignored=True`` labels every row -100 (the planted bug: a batch
    with no label to learn from gives a mean over nothing, a NaN loss)."""

    def __init__(self, n=24, ignored=False):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 60, (n, 8), generator=g)
        self.labels = torch.full((n,), -100) if ignored else torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def tiny_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def train(tmp_path, callback, dataset, max_steps=3):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    assert args.logging_nan_inf_filter  # the default that hides NaN losses from the logs
    trainer = transformers.Trainer(model=tiny_bert(), args=args, train_dataset=dataset, callbacks=[callback])
    trainer.train()
    return trainer


def test_clean_training_is_silent(tmp_path):
    cb = AuditCallback()
    trainer = train(tmp_path, cb, Rows())
    assert cb.findings == []
    assert active_session() is None and cb.session is None
    logged = [h for h in trainer.state.log_history if "torch_audit/findings" in h]
    assert logged == [{"torch_audit/findings": 0, "step": 3}]


def test_nan_loss_hidden_by_the_trainer_is_reported(tmp_path, caplog):
    cb = AuditCallback()
    with caplog.at_level(logging.ERROR, logger="transformers.torch_audit"):
        trainer = train(tmp_path, cb, Rows(ignored=True))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # the Trainer's logs do not show the NaN (logging_nan_inf_filter) ...
    assert losses and all(math.isfinite(x) for x in losses)
    # ... the audit does
    codes = {f.code for f in cb.findings}
    assert "TA701" in codes, cb.findings
    nan_loss = next(f for f in cb.findings if f.code == "TA701")
    assert nan_loss.step == 0 and nan_loss.value == "nan" and nan_loss.count == 3
    assert any("TA701" in r.getMessage() for r in caplog.records)
    (logged,) = [h for h in trainer.state.log_history if "torch_audit/findings" in h]
    assert logged["torch_audit/findings"] == len(cb.findings) and logged["torch_audit/TA701"] == 3
    assert active_session() is None


def test_fail_fast_stops_training_and_closes_the_session(tmp_path):
    cb = AuditCallback(fail_fast=True)
    with pytest.raises(AuditFailure) as info:
        train(tmp_path, cb, Rows(ignored=True), max_steps=50)
    assert info.value.finding.code == "TA701"
    assert active_session() is None and cb.session is None
    assert max(f.step for f in cb.findings) <= 1


def test_fail_on_raises_at_the_end(tmp_path):
    cb = AuditCallback(fail_on="error")
    with pytest.raises(AuditFailure):
        train(tmp_path, cb, Rows(ignored=True))
    assert active_session() is None


def test_is_a_trainer_callback():
    assert isinstance(AuditCallback(), transformers.TrainerCallback)
    cb = AuditCallback()
    cb.close()  # nothing open: a no-op
