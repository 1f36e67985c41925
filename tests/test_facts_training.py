"""The training-events facts (auditor/lint/facts/training.py) on their own."""

from __future__ import annotations

import textwrap

import libcst as cst

from torch_audit.lint.context import FileContext
from torch_audit.lint.facts.names import dotted
from torch_audit.lint.traverse import dispatch_table, walk


def context(src: str) -> FileContext:
    src = textwrap.dedent(src)
    module = cst.parse_module(src)
    ctx = FileContext("t.py", src, module)
    walk(module, [dispatch_table([ctx.indexer], "visit_"), dispatch_table([ctx.indexer], "leave_")], ctx.stack)
    return ctx


def function(ctx: FileContext, name: str):
    return next(s for s in ctx.module_scope.walk() if s.kind == "function" and s.name == name)


def kinds(events):
    return [e.kind for e in events]


def test_plain_loop_order():
    ctx = context(
        """
        def train(model, loader, optimizer, scheduler):
            for x, y in loader:
                optimizer.zero_grad()
                loss = model(x)
                loss.backward()
                optimizer.step()
            scheduler.step()
        """
    )
    fn = function(ctx, "train")
    (loop,) = fn.loops
    assert kinds(ctx.training.loop_events(loop)) == ["zero_grad", "backward", "step"]
    assert kinds(ctx.training.function_events(fn)) == ["zero_grad", "backward", "step", "sched_step"]
    assert all(e.at_level(loop) for e in ctx.training.loop_events(loop))


def test_framework_spellings():
    ctx = context(
        """
        import torch
        import torch_xla.core.xla_model as xm

        def train(loader, model, optimizer, scaler, accelerator, fabric):
            for x in loader:
                scaler.scale(model(x)).backward()
                scaler.unscale_(optimizer)
                scaler.step(optimizer)
                accelerator.backward(loss_a)
                fabric.backward(loss_b)
                torch.autograd.backward(loss_c)
                xm.optimizer_step(optimizer)
                loss_d.backward(torch.ones_like(loss_d))
        """
    )
    events = ctx.training.function_events(function(ctx, "train"))
    assert kinds(events) == ["backward", "unscale", "step", "backward", "backward", "backward", "step", "backward"]
    targets = [ctx.code(e.target) if e.target is not None else None for e in events if e.kind == "backward"]
    assert targets == ["model(x)", "loss_a", "loss_b", "loss_c", "loss_d"]
    assert [e.optimizer for e in events if e.kind in ("step", "unscale")] == ["optimizer"] * 3


def test_manual_backward_target():
    ctx = context(
        """
        class Lit:
            def training_step(self, batch):
                loss = self.compute(batch)
                self.manual_backward(loss)
        """
    )
    (e,) = ctx.training.function_events(function(ctx, "training_step"))
    assert e.kind == "backward" and ctx.code(e.target) == "loss"


def test_gradient_clearing_spellings():
    ctx = context(
        """
        def clear(model):
            for p in model.parameters():
                p.grad = None
                p.grad.zero_()
                p.grad.data.zero_()
                p.grad.detach_().zero_()
                p.grad = torch.zeros_like(p)
                del p.grad
        """
    )
    events = ctx.training.function_events(function(ctx, "clear"))
    assert kinds(events) == ["zero_grad"] * 6
    assert {e.subject for e in events} == {"p"}


def test_helper_events_and_caller_subject():
    ctx = context(
        """
        def validate(net, loader):
            net.eval()
            for x in loader:
                net(x)

        def step(opt, loss):
            loss.backward()
            opt.step()

        def fit(model, optimizer, loader):
            for epoch in range(3):
                for x in loader:
                    step(optimizer, model(x))
                validate(model, loader)
        """
    )
    fn = function(ctx, "fit")
    outer, inner = fn.loops
    events = ctx.training.loop_events(outer)
    assert kinds(events) == ["backward", "step", "eval"]
    backward, step, ev = events
    assert step.via is not None and step.caller_subject == "optimizer" and step.subject == "opt"
    assert ev.caller_subject == "model" and ev.at_level(outer)
    assert backward.at_level(inner) and not backward.at_level(outer)
    assert ctx.position(step.site_node).start.line == 14


def test_events_in_a_helper_loop_are_not_once_per_iteration():
    ctx = context(
        """
        def one_epoch(model, opt, loader):
            for x in loader:
                model(x).backward()
                opt.step()

        def fit(model, opt, loader):
            for epoch in range(3):
                one_epoch(model, opt, loader)
        """
    )
    (loop,) = function(ctx, "fit").loops
    events = ctx.training.loop_events(loop)
    assert kinds(events) == ["backward", "step"]
    assert all(e.in_helper_loop and not e.at_level(loop) for e in events)


def test_method_helper_keeps_self_subject():
    ctx = context(
        """
        class Trainer:
            def evaluate(self):
                self.model.eval()

            def fit(self):
                for epoch in range(3):
                    self.evaluate()
        """
    )
    (e,) = ctx.training.function_events(function(ctx, "fit"))
    assert e.kind == "eval" and e.caller_subject == "self.model"


def test_conditional_in_loop():
    ctx = context(
        """
        def train(model, opt, loader, flag):
            if flag:
                for i, x in enumerate(loader):
                    model(x).backward()
                    if (i + 1) % 4 == 0:
                        opt.step()
        """
    )
    fn = function(ctx, "train")
    (loop,) = fn.loops
    backward, step = ctx.training.loop_events(loop)
    assert not backward.conditional_in(loop)
    assert step.conditional_in(loop)


def test_noise_scheduler_is_not_an_optimizer():
    ctx = context(
        """
        def sample(unet, noise_scheduler, latents):
            for t in noise_scheduler.timesteps:
                latents = noise_scheduler.step(unet(latents, t), t, latents).prev_sample
        """
    )
    (e,) = ctx.training.function_events(function(ctx, "sample"))
    assert e.kind == "sched_step" and e.optimizer is None
    assert dotted(e.call.receiver) == "noise_scheduler"


def test_helper_local_variable_is_not_the_callers_name():
    ctx = context(
        """
        SHARED = None

        def validate(models):
            [m.eval() for m in models]
            SHARED.eval()

        def fit(models, m):
            for epoch in range(3):
                validate(models)
        """
    )
    local, shared = ctx.training.function_events(function(ctx, "fit"))
    assert local.subject == "m" and local.caller_subject is None
    assert shared.caller_subject == "SHARED"


def test_grad_disabled_through_the_helper_call():
    ctx = context(
        """
        import torch

        def step(model, x, training):
            loss = model(x)
            if training:
                loss.backward()

        def validate(model, loader):
            for x in loader:
                with torch.no_grad():
                    step(model, x, False)
        """
    )
    (e,) = ctx.training.function_events(function(ctx, "validate"))
    assert e.kind == "backward" and e.conditional and ctx.training.grad_disabled(e)
