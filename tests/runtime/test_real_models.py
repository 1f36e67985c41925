"""Real architectures (tiny Hugging Face configurations, random weights, no network) train a few
healthy steps under every default and preview check without a finding: the precision test of
the runtime side, as the corpus is the linter's. BART is the trap that made vanishing-gradient
compare with the median weight gradient (its encoder's attention weights get ~1e-7 of the
shared embedding's gradient at initialisation)."""

from __future__ import annotations

import warnings

import pytest
import torch

import torch_audit

transformers = pytest.importorskip("transformers")

LAYERS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _tokens(vocab: int = 100, shape: tuple[int, int] = (4, 12)) -> torch.Tensor:
    return torch.randint(3, vocab, shape)


def _causal() -> dict:
    t = _tokens()
    return {"input_ids": t, "labels": t}


MODELS = {
    "bert": (lambda: transformers.BertForSequenceClassification(
        transformers.BertConfig(**LAYERS, vocab_size=100, num_labels=3)),
        lambda: {"input_ids": _tokens(), "labels": torch.randint(0, 3, (4,))}),
    "bart": (lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100,
        max_position_embeddings=64)),
        lambda: {"input_ids": _tokens(), "labels": _tokens(shape=(4, 6))}),
    "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **LAYERS, vocab_size=100, num_key_value_heads=2, max_position_embeddings=64)), _causal),
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64,
        bos_token_id=1, eos_token_id=2)), _causal),
    "vit": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        **LAYERS, image_size=32, patch_size=8, num_labels=3)),
        lambda: {"pixel_values": torch.randn(4, 3, 32, 32), "labels": torch.randint(0, 3, (4,))}),
    "convnext": (lambda: transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3, image_size=32)),
        lambda: {"pixel_values": torch.randn(4, 3, 32, 32), "labels": torch.randint(0, 3, (4,))}),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_healthy_run_of_a_real_model_is_silent(name):
    build, batch = MODELS[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch_audit.audit(config=False, preview=True) as session:
        for step in range(8):
            loss = model(**batch()).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            if step == 4:  # a validation pass in between, done right
                model.eval()
                with torch.no_grad():
                    model(**batch())
                model.train()
    assert session.findings == [], session.report()
    assert session.step == 8


def test_a_nan_planted_in_a_real_model_names_its_layer_and_library_line():
    build, batch = MODELS["bert"]
    torch.manual_seed(0)
    model = build().train()
    target = "bert.encoder.layer.1.intermediate.dense"
    layer = dict(model.named_modules())[target]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch_audit.audit(config=False, select=["nonfinite-activation"]) as session:
        for step in range(3):
            if step == 1:
                with torch.no_grad():
                    layer.weight[0, 0] = float("nan")
            model(**batch()).loss.backward()
            opt.step()
            opt.zero_grad()
    first = min((f for f in session.findings), key=lambda f: f.step)
    assert first.module == target and first.step == 1, session.report()
    # the line in the library's forward that calls the layer, named below site-packages
    assert "called at transformers/models/bert/modeling_bert.py:" in first.message


@pytest.mark.parametrize("name", ["bert", "convnext"])
def test_a_model_learning_a_task_is_silent(name):
    """Eighty one-cycle steps memorising four batches: attention queries and keys (and ConvNeXt's
    LayerScale branches) see their gradients grow thousands of times from near zero, and the
    loss, near zero, doubles on noise. Neither is an exploding gradient or a diverging loss."""
    build, batch = MODELS[name]
    torch.manual_seed(0)
    model = build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=80)
    batches = [batch() for _ in range(4)]
    with torch_audit.audit(config=False, preview=True) as session:
        for step in range(80):
            loss = model(**batches[step % 4]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            schedule.step()
    assert loss.item() < 0.5, "the task was learnt"
    assert session.findings == [], session.report()
