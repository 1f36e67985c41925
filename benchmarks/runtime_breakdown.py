"""Where an audited training step's time goes: by part of the step, by subscriber, by check,
and in the garbage collector.

``runtime_overhead.py`` says how much a session costs; this script says where, for the loops
where torch-audit's fixed cost per step shows most: steps of a fraction of a millisecond.

- ``--model regression`` (default): pytorch/examples' regression loop (a ``Linear(4, 1)``
  fitted to a polynomial, ``F.smooth_l1_loss``, ``.item()``, a hand-written SGD update).
- ``--model mlp``: a 3-layer MLP trained by Adam, ``F.cross_entropy`` (an optimizer step).

Sections (``--only`` picks some):

- ``parts``: the step cut into parts (batch, zero_grad, forward, loss, item, backward,
  update), each timed with ``perf_counter_ns``; rounds of ``--steps`` plain steps, then as many
  under one ``torch_audit.audit()`` session (default checks), interleaved; the median over
  steps and rounds of each part, and the difference.
- ``subscribers``: one audited run with every subscriber method timed (the timer adds about
  0.1 us a call): microseconds a step per subscriber and event.
- ``checks``: each runtime check selected alone (and ``none``: no check, so no hooks), the
  median over rounds of audited minus plain microseconds a step. The checks share hooks and
  the call window: the first check pays for them, so the sum is not the total.
- ``budget``: the steady state of a long run under the default cost budget
  (``torch_audit.runtime.pass_sampling``): one session, its first ``--warm`` steps (the
  warm-up, audited whole, and the first measurements) left out, then rounds of
  ``--budget-steps`` audited steps interleaved with as many plain ones inside
  ``session.paused()`` (long rounds: each return from a pause begins with a burst); the median
  microseconds a step of each and their ratio, then the same with ``budget=None`` (every pass
  audited), and how many passes the session audited.
- ``gc``: the young generation's allocation count a step (``gc.get_count()[0]`` with the
  collector off: 700 of it is one young collection, and ten of those one collection of the next
  generation) and the full collections over ``--gc-steps`` steps with the collector on. A full
  collection walks torch's whole heap (about 0.1 s), so a session that makes the young count
  grow faster makes them come sooner.

The numbers are differences and ratios against plain steps in the same process; a quiet
machine makes them steadier (one intra-op thread by default, ``--threads``).

    python benchmarks/runtime_breakdown.py [--model mlp] [--only parts --only gc] [--rounds 9]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
import torch_audit.runtime.session
from torch_audit.catalog import load_catalog

PARTS = ("batch", "zero_grad", "forward", "loss", "item", "backward", "update")
_ns = time.perf_counter_ns


# -- the loops ----------------------------------------------------------------------------------
class Regression:
    """pytorch/examples regression/main.py's step, with its hand-written update."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.w = torch.randn(4, 1) * 5
        self.b = torch.randn(1) * 5
        self.model = nn.Linear(4, 1)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(32).unsqueeze(1)
        x = torch.cat([x ** i for i in range(1, 5)], 1)
        return x, x.mm(self.w) + self.b.item()

    def zero_grad(self) -> None:
        self.model.zero_grad()

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(out, y)

    def update(self) -> None:
        for p in self.model.parameters():
            p.data.add_(-0.1 * p.grad)


class Mlp:
    """A small classifier trained by Adam."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                   nn.Linear(64, 10))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(64, 32), torch.randint(0, 10, (64,))

    def zero_grad(self) -> None:
        self.opt.zero_grad()

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    def update(self) -> None:
        self.opt.step()


LOOPS = {"regression": Regression, "mlp": Mlp}


def run_parts(loop: Any, steps: int) -> list[list[int]]:
    """``steps`` steps; the nanoseconds of each part of each step."""
    times: list[list[int]] = [[] for _ in PARTS]
    model = loop.model
    for _ in range(steps):
        t0 = _ns()
        x, y = loop.batch()
        t1 = _ns()
        loop.zero_grad()
        t2 = _ns()
        out = model(x)
        t3 = _ns()
        loss = loop.loss(out, y)
        t4 = _ns()
        loss.item()
        t5 = _ns()
        loss.backward()
        t6 = _ns()
        loop.update()
        t7 = _ns()
        for i, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6), (t6, t7))):
            times[i].append(b - a)
    return times


def step_us(loop: Any, steps: int) -> float:
    """The mean microseconds of a whole step over ``steps`` steps."""
    start = _ns()
    run_parts(loop, steps)
    return (_ns() - start) / steps / 1e3


def session(select: list[str] | None = None) -> Any:
    return torch_audit.audit(config=False, select=select)


# -- sections -----------------------------------------------------------------------------------
def parts(loop: Any, args: argparse.Namespace) -> None:
    plain: list[list[int]] = [[] for _ in PARTS]
    audited: list[list[int]] = [[] for _ in PARTS]
    for _ in range(args.rounds):
        for i, t in enumerate(run_parts(loop, args.steps)):
            plain[i].extend(t)
        with session():
            for i, t in enumerate(run_parts(loop, args.steps)):
                audited[i].extend(t)
    print(f"\nparts of a step (median us over {args.rounds} rounds of {args.steps} steps)")
    print(f"  {'part':10s} {'plain':>8s} {'audited':>8s} {'extra':>8s}")
    total_p = total_a = 0.0
    for name, p, a in zip(PARTS, plain, audited):
        mp, ma = statistics.median(p) / 1e3, statistics.median(a) / 1e3
        total_p, total_a = total_p + mp, total_a + ma
        print(f"  {name:10s} {mp:8.1f} {ma:8.1f} {ma - mp:+8.1f}")
    print(f"  {'sum':10s} {total_p:8.1f} {total_a:8.1f} {total_a - total_p:+8.1f}"
          f"   ratio {total_a / total_p:.2f}x")


def _timed(table: dict[str, int], name: str, fn: Callable) -> Callable:
    def timed(*args: Any) -> Any:
        start = _ns()
        try:
            return fn(*args)
        finally:
            table[name] += _ns() - start
    return timed


def subscribers(loop: Any, args: argparse.Namespace) -> None:
    spent: dict[str, int] = collections.defaultdict(int)
    with session() as s:
        by_event = s._by_event
        for event, handlers in by_event.items():
            by_event[event] = [(sub, _timed(spent, f"{type(sub).__name__}.on_{event}", fn))
                               for sub, fn in handlers]
        s._hooks.set_forward_subscribers(tuple(by_event.get("forward", ())))
        run_parts(loop, 50)
        spent.clear()
        steps = args.steps * args.rounds
        run_parts(loop, steps)
    print(f"\nsubscribers (us a step over {steps} audited steps, timer included)")
    for name, ns in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:48s} {ns / steps / 1e3:7.2f}")


def runtime_checks() -> list[str]:
    return sorted(rule.name for rule in load_catalog(("runtime",)).rules)


def checks(loop: Any, args: argparse.Namespace) -> None:
    names = ["none"] + [n for n in runtime_checks() if n != "runtime-internal-error"]
    print(f"\none check at a time (median over {args.rounds} rounds of audited - plain us a step)")
    for name in names:
        select = ["runtime-internal-error"] if name == "none" else [name]
        deltas = []
        for _ in range(args.rounds):
            plain = step_us(loop, args.steps)
            with session(select):
                audited = step_us(loop, args.steps)
            deltas.append(audited - plain)
        print(f"  {name:36s} {statistics.median(deltas):+8.1f}")


def budget(loop: Any, args: argparse.Namespace) -> None:
    steps = args.budget_steps
    print(f"\nsteady state under a budget (median us a step over {args.rounds} rounds of "
          f"{steps} steps, after {args.warm} steps)")
    for budget in (torch_audit.runtime.session.DEFAULT_BUDGET, None):
        plain, audited = [], []
        with torch_audit.audit(config=False, budget=budget) as s:
            run_parts(loop, args.warm)
            for _ in range(args.rounds):
                with s.paused():
                    plain.append(step_us(loop, steps))
                audited.append(step_us(loop, steps))
        p, a = statistics.median(plain), statistics.median(audited)
        sampler = s.sampler
        passes = (f", {sampler.audited_passes} passes audited, {sampler.gaps} gaps"
                  if sampler is not None else "")
        print(f"  budget={budget}: plain {p:7.1f}  audited {a:7.1f}  extra {a - p:+7.1f}  "
              f"ratio {a / p:.3f}x{passes}")


def gc_counts(loop: Any, args: argparse.Namespace) -> None:
    def young_per_step(select: list[str] | None, audited: bool) -> float:
        was = gc.isenabled()
        gc.disable()
        try:
            ctx = session(select) if audited else contextlib.nullcontext()
            with ctx:
                run_parts(loop, 20)
                gc.collect()
                start = gc.get_count()[0]
                run_parts(loop, 64)
                return (gc.get_count()[0] - start) / 64
        finally:
            if was:
                gc.enable()

    def full_collections(audited: bool) -> tuple[int, float]:
        full: list[float] = []
        began: list[int] = []

        def callback(phase: str, info: dict) -> None:
            if info["generation"] == 2:
                if phase == "start":
                    began.append(_ns())
                else:
                    full.append((_ns() - began.pop()) / 1e6)

        gc.collect()
        gc.callbacks.append(callback)
        try:
            with session() if audited else contextlib.nullcontext():
                run_parts(loop, args.gc_steps)
        finally:
            gc.callbacks.remove(callback)
        return len(full), sum(full)

    print("\ngarbage collector")
    print(f"  young count a step: plain {young_per_step(None, False):.1f}, "
          f"audited {young_per_step(None, True):.1f}")
    for audited in (False, True):
        n, ms = full_collections(audited)
        print(f"  full collections in {args.gc_steps} {'audited' if audited else 'plain'} steps "
              f"(after a collection): {n}, {ms:.0f} ms")


SECTIONS = {"parts": parts, "subscribers": subscribers, "checks": checks, "budget": budget,
            "gc": gc_counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(LOOPS), default="regression")
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS))
    parser.add_argument("--steps", type=int, default=300, help="steps a round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--gc-steps", type=int, default=5000)
    parser.add_argument("--warm", type=int, default=600, help="steps before the budget's rounds")
    parser.add_argument("--budget-steps", type=int, default=3000, help="steps a round of the budget's")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loop = LOOPS[args.model]()
    run_parts(loop, 200)  # warm up torch's and Python's caches
    print(f"{args.model}: torch {torch.__version__}, {args.threads} thread(s)")
    for name in args.only or list(SECTIONS):
        SECTIONS[name](loop, args)


if __name__ == "__main__":
    main()
