"""Overhead of the runtime auditor against the plain training loop, in the same process.

Two models from issue 6 (CPU): a ResNet-style CNN (~0.7M parameters, batch 64x3x32x32, SGD
with momentum) and a 4-layer transformer encoder (d_model 256, 4 heads, sequence 128, batch 16,
AdamW). For each model the plain loop, the loop under ``torch_audit.audit()`` (default checks)
and the loop under ``torch.autograd.detect_anomaly()`` run in interleaved rounds; the script
prints median step times, the ratios to the plain loop, and the host synchronisations per
optimizer step, counted in a separate pass with a TorchDispatchMode over
``aten._local_scalar_dense`` plus patched ``Tensor.item``/``Tensor.tolist``.

    python benchmarks/runtime_overhead.py [--rounds 5] [--steps 6] [--threads 2] [--only cnn]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import torch_audit


# -- models -------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.short(x))


class ResNetish(nn.Module):
    def __init__(self, widths=(32, 64, 128), blocks=(2, 2, 2), classes=10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(Block(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Encoder(nn.Module):
    def __init__(self, vocab=1000, d=256, heads=4, layers=4, seq=128) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, seq, d))
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=4 * d, dropout=0.1,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens):
        return self.head(self.encoder(self.emb(tokens) + self.pos))


def make(name: str):
    torch.manual_seed(0)
    if name == "cnn":
        model = ResNetish()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    else:
        model = Encoder()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        tokens = torch.randint(0, 1000, (16, 128))
        target = torch.randint(0, 1000, (16, 128))

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(tokens).flatten(0, 1), target.flatten()).backward()
            opt.step()
    return model, opt, step


# -- sync counting ------------------------------------------------------------------------------
class SyncCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_syncs():
    counter = SyncCounter()
    item, tolist = torch.Tensor.item, torch.Tensor.tolist

    def counted_item(self):
        counter.count += 1
        with torch.utils._python_dispatch._disable_current_modes():
            return item(self)

    def counted_tolist(self):
        counter.count += 1
        with torch.utils._python_dispatch._disable_current_modes():
            return tolist(self)

    torch.Tensor.item, torch.Tensor.tolist = counted_item, counted_tolist
    try:
        with counter:
            yield counter
    finally:
        torch.Tensor.item, torch.Tensor.tolist = item, tolist


MODES = {
    "plain": contextlib.nullcontext,
    "audit": lambda: torch_audit.audit(),
    "anomaly": lambda: torch.autograd.detect_anomaly(check_nan=True),
}


def measure(name: str, rounds: int, steps: int, clock) -> dict:
    model, opt, step = make(name)
    for _ in range(2):  # warm-up (allocator, lazy init, Adam state)
        step()
    with torch_audit.audit():
        step()
    times: dict[str, list[float]] = {m: [] for m in MODES}
    # per-round medians: a round runs every mode back to back, so the ratio within a round
    # cancels the slow drift of a shared machine (phases of ±10% that span several rounds)
    rounds_med: dict[str, list[float]] = {m: [] for m in MODES}
    order = list(MODES)
    for r in range(rounds):
        for mode in order[r % len(order):] + order[:r % len(order)]:
            this_round = []
            with MODES[mode]():
                for _ in range(steps):
                    t0 = clock()
                    step()
                    this_round.append(clock() - t0)
            times[mode].extend(this_round)
            rounds_med[mode].append(statistics.median(this_round))
    syncs = {}
    for mode in MODES:
        with MODES[mode]():
            with count_syncs() as c:
                for _ in range(3):
                    step()
        syncs[mode] = c.count / 3
    med = {m: statistics.median(v) for m, v in times.items()}
    mean = {m: statistics.fmean(v) for m, v in times.items()}
    params = sum(p.numel() for p in model.parameters())
    paired = {m: sorted(a / p for a, p in zip(rounds_med[m], rounds_med["plain"])) for m in MODES}
    return {"model": name, "params": params, "median": med, "mean": mean, "syncs": syncs,
            "steps": len(times["plain"]), "paired": paired}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 4:
        m = statistics.median(values)
        return m, min(values), max(values)
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q2, q1, q3


_HOOKS = {"_forward_pre", "_forward_post", "_step_pre", "_step_post"}
_WRAPPERS = {"backward", "cross_entropy", "relu", "zero_grad"}


def hook_share(name: str, steps: int = 10) -> float:
    """The share of an audited step spent inside torch-audit, from cProfile: the module and
    optimizer hooks, the checks called from the patched ``backward``/``cross_entropy``/``relu``/
    ``zero_grad`` and those wrappers' own time. Deterministic where wall-clock ratios are not;
    it leaves out indirect costs (torch's slower hooked module-call path, cache effects) and
    cProfile slows Python more than torch's kernels, so it is an estimate, not a bound."""
    import cProfile
    import pstats

    model, opt, step = make(name)
    for _ in range(2):
        step()
    profiler = cProfile.Profile()
    with torch_audit.audit():
        step()
        t0 = time.perf_counter()
        profiler.enable()
        for _ in range(steps):
            step()
        profiler.disable()
        total = time.perf_counter() - t0
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    inside = 0.0
    for (path, _line, func), (_cc, _nc, tt, ct, callers) in stats.items():
        if not path.endswith("runtime/session.py"):
            continue
        if func in _HOOKS:
            inside += ct
        elif func in _WRAPPERS:
            inside += tt
        elif func == "_call":
            inside += sum(c[3] for (cpath, _l, cfunc), c in callers.items()
                          if not (cpath.endswith("runtime/session.py") and cfunc in _HOOKS))
    return inside / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", choices=["cnn", "transformer"], default=None)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: time.perf_counter; cpu: time.process_time (robust on a busy box)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, {args.clock} clock")
    print(f"{'model':12} {'params':>8} {'plain ms':>9} {'audit':>7} {'anomaly':>8} "
          f"{'audit(mean)':>11} {'audit(paired) [IQR]':>24} {'syncs/step plain/audit/anomaly':>31}")
    for name in ([args.only] if args.only else ["cnn", "transformer"]):
        r = measure(name, args.rounds, args.steps, clock)
        med, mean, s = r["median"], r["mean"], r["syncs"]
        mid, q1, q3 = quartiles(r["paired"]["audit"])
        print(
            f"{name:12} {r['params'] / 1e6:7.2f}M {med['plain'] * 1e3:9.1f} "
            f"{med['audit'] / med['plain']:6.3f}x {med['anomaly'] / med['plain']:7.3f}x "
            f"{mean['audit'] / mean['plain']:10.3f}x "
            f"{mid:9.3f}x [{q1:.3f}-{q3:.3f}] "
            f"{s['plain']:>13.1f} / {s['audit']:.1f} / {s['anomaly']:.1f}"
        )
    print("audit/anomaly: median step time over all rounds against the plain loop's; audit(paired): "
          "the median over rounds of each round's audit/plain ratio, with its interquartile range")
    for name in ([args.only] if args.only else ["cnn", "transformer"]):
        print(f"{name}: time inside torch-audit's hooks and checks (cProfile, 10 audited steps): "
              f"{hook_share(name):.1%} of the step")


if __name__ == "__main__":
    main()
