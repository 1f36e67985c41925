"""Overhead of the runtime auditor against the plain training loop, in the same process.

Two models from issue 6 (CPU): a ResNet-style CNN (~0.7M parameters, batch 64x3x32x32, SGD
with momentum) and a 4-layer transformer encoder (d_model 256, 4 heads, sequence 128, batch 16,
AdamW). For each model one ``torch_audit.audit()`` session (default checks) stays open for the
whole run, and steps are interleaved one at a time: a plain step and a
``torch.autograd.detect_anomaly()`` step run with the session paused (``session.paused()``
removes every hook and patch, so they run exactly as without torch-audit), an audited step
with it active. Step times on a shared VM drift by ±10% over seconds; the ratio of steps run
side by side cancels that drift, so the script prints the median over triples of each
triple's ratio with a distribution-free 95% confidence interval. It also prints the host
synchronisations per optimizer step, counted in a separate pass with a TorchDispatchMode over
``aten._local_scalar_dense`` plus patched ``Tensor.item``/``Tensor.tolist``, and a cProfile
estimate of the share of an audited step spent inside torch-audit.

Issue 18's many-small-modules models are here too: a tiny MLP (where the fixed per-step cost
shows), 2,500 ``Linear(4, 4)`` modules (5,000 parameter tensors) and a mixture-of-experts layer
with 256 small experts.

    python benchmarks/runtime_overhead.py [--triples 40] [--threads 2] [--only cnn] [--clock cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
import warnings

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


class MoE(nn.Module):
    """A mixture-of-experts layer with many small experts (one expert per token), as issue 18
    asks."""

    def __init__(self, experts=256, d=16, hidden=32, classes=10) -> None:
        super().__init__()
        self.router = nn.Linear(d, experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, d)) for _ in range(experts)
        )
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        gate = self.router(x).softmax(-1)
        # hash routing (token i to expert i mod E): every expert gets tokens every step, as a
        # trained, balanced router's would; a random router's argmax leaves most experts idle
        choice = torch.arange(x.shape[0]) % len(self.experts)
        weight = gate.gather(1, choice[:, None]).squeeze(1)
        out = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            picked = (choice == i).nonzero().flatten()
            if picked.numel():  # scaled by the gate, so that the router learns too
                out = out.index_add(0, picked, expert(x[picked]) * weight[picked, None])
        return self.head(out + x)


class SineLSTM(nn.Module):
    """pytorch/examples' time-sequence-prediction model: two LSTM cells over a sequence,
    trained with LBFGS, whose step(closure) runs up to 20 forward/backward passes."""

    def __init__(self, hidden: int = 51) -> None:
        super().__init__()
        self.hidden = hidden
        self.lstm1 = nn.LSTMCell(1, hidden)
        self.lstm2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, x):
        h1 = c1 = x.new_zeros(x.shape[0], self.hidden)
        h2 = c2 = x.new_zeros(x.shape[0], self.hidden)
        outputs = []
        for t in x.split(1, dim=1):
            h1, c1 = self.lstm1(t, (h1, c1))
            h2, c2 = self.lstm2(h1, (h2, c2))
            outputs.append(self.linear(h2))
        return torch.cat(outputs, dim=1)


#: models of issue 18 ("the cost of many small modules") next to issue 6's CNN and transformer,
#: and issue 19's LBFGS recipe (per-step cost includes every pass of the closure)
MODELS = ("cnn", "transformer", "tiny", "linear2500", "moe", "lbfgs")


def make(name: str):
    torch.manual_seed(0)
    if name in ("tiny", "linear2500", "moe"):
        if name == "tiny":  # the fixed cost dominates a step this small
            model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
            x = torch.randn(32, 16)
        elif name == "linear2500":  # 2,500 modules, 5,000 parameter tensors
            model = nn.Sequential(*(nn.Linear(4, 4) for _ in range(2500)), nn.Linear(4, 10))
            x = torch.randn(32, 4)
        else:
            model = MoE()
            x = torch.randn(1024, 16)
        y = torch.randint(0, 10, (x.shape[0],))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return model, opt, step
    if name == "lbfgs":
        model = SineLSTM()
        # no early stop: every step runs max_iter=20 passes, so that steps side by side compare
        opt = torch.optim.LBFGS(model.parameters(), lr=0.8, tolerance_grad=0.0, tolerance_change=0.0)
        t = torch.arange(100, dtype=torch.float32)
        waves = torch.sin((t + torch.randint(-80, 80, (16, 1))) / 20.0)
        x, y = waves[:, :-1], waves[:, 1:]

        def step():
            def closure():
                opt.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                return loss
            opt.step(closure)
        return model, opt, step
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


def median_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The median of ``values`` and a distribution-free confidence interval for it: the order
    statistics ``x(k)`` and ``x(n-k+1)`` with the largest ``k`` for which a Binomial(n, 1/2)
    leaves at most ``(1-confidence)/2`` in each tail."""
    xs = sorted(values)
    n = len(xs)
    tail, k = 0.0, 0
    while k < n // 2:
        tail += math.comb(n, k) / 2 ** n
        if tail > (1 - confidence) / 2:
            break
        k += 1
    if k == 0:  # too few values for that confidence: the range
        return statistics.median(xs), xs[0], xs[-1]
    return statistics.median(xs), xs[k - 1], xs[n - k]


def measure(name: str, triples: int, clock, ignore: list[str] | None = None,
            closure_passes: str = "first") -> dict:
    """One audit session for the whole run; each triple runs one plain step and one
    detect_anomaly step with the session paused (hooks and patches removed, so those steps run
    exactly as without torch-audit) and one audited step, in rotating order. A triple takes a
    few seconds, shorter than the VM's slow phases of ±10%, so each triple's ratio cancels them."""
    model, opt, step = make(name)
    for _ in range(2):  # warm-up (allocator, lazy init, optimizer state)
        step()
    times: dict[str, list[float]] = {"plain": [], "audit": [], "anomaly": []}
    order = list(times)
    # budget=None: every step audited, so that each triple compares an audited step (the
    # default budget samples long runs of short steps; runtime_breakdown.py --only budget)
    with torch_audit.audit(ignore=ignore, config=False, closure_passes=closure_passes,
                           budget=None) as session:
        step()  # the session's first step builds its index
        for r in range(triples):
            for mode in order[r % 3:] + order[:r % 3]:
                paused = session.paused() if mode != "audit" else contextlib.nullcontext()
                anomaly = (torch.autograd.detect_anomaly(check_nan=True) if mode == "anomaly"
                           else contextlib.nullcontext())
                with paused, anomaly:
                    t0 = clock()
                    step()
                    times[mode].append(clock() - t0)
    syncs = {}
    for mode, ctx in (("plain", contextlib.nullcontext),
                      ("audit", lambda: torch_audit.audit(ignore=ignore, config=False,
                                                          closure_passes=closure_passes)),
                      ("anomaly", lambda: torch.autograd.detect_anomaly(check_nan=True))):
        with ctx():
            step()
            with count_syncs() as c:
                for _ in range(3):
                    step()
        syncs[mode] = c.count / 3
    params = sum(p.numel() for p in model.parameters())
    paired = {m: [a / p for a, p in zip(times[m], times["plain"])] for m in times}
    extra = [a - p for a, p in zip(times["audit"], times["plain"])]
    return {"model": name, "params": params, "times": times, "syncs": syncs,
            "paired": paired, "extra": extra, "findings": len(session.findings)}


_HOOKS = {"forward_pre", "forward_post", "step_pre", "step_post"}
#: the call window's handlers: their own time (they run backward() and the loss inside)
_HANDLERS = {"on_backward_call", "on_loss_call", "emit_loss"}


def hook_share(name: str, steps: int = 10, ignore: list[str] | None = None,
               closure_passes: str = "first") -> float:
    """The share of an audited step spent inside torch-audit, from cProfile: the module and
    optimizer hooks, the ``backward()``/loss handlers of the call window (with the checks they
    call) and the window's torch function mode's own time. Deterministic where wall-clock ratios are not;
    it leaves out indirect costs (torch's slower hooked module-call path, cache effects) and
    cProfile slows Python more than torch's kernels, so it is an estimate, not a bound."""
    import cProfile
    import pstats

    model, opt, step = make(name)
    for _ in range(2):
        step()
    profiler = cProfile.Profile()
    with torch_audit.audit(ignore=ignore, config=False, closure_passes=closure_passes):
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
        if path.endswith("runtime/intercept.py"):
            inside += tt  # the mode's own time; the handlers it calls are counted below
            continue
        # torch's hooks live in runtime/hooks.py (TorchHooks), the guarded calls of subscribers
        # in runtime/session.py (_call, from _emit and the deferred reads)
        if path.endswith("runtime/hooks.py"):
            if func in _HOOKS:
                inside += ct
            elif func in _HANDLERS:
                inside += tt
        elif path.endswith("runtime/session.py") and func == "_call":
            inside += sum(c[3] for (cpath, _l, cfunc), c in callers.items()
                          if not cpath.endswith("runtime/hooks.py") and cfunc != "_emit")
        elif path.endswith("runtime/session.py") and func == "_emit":
            inside += sum(c[3] for (cpath, _l, cfunc), c in callers.items()
                          if cpath.endswith("runtime/hooks.py") and cfunc in _HANDLERS)
    return inside / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--triples", type=int, default=40,
                    help="interleaved plain/audit/anomaly step triples per model (default 40)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", choices=MODELS, action="append", default=None,
                    help="measure only this model (repeatable; default: all)")
    ap.add_argument("--ignore", action="append", default=None, metavar="CHECK",
                    help="leave a check out of the audited steps, to see what it costs (repeatable)")
    ap.add_argument("--closure-passes", choices=["first", "all"], default="first",
                    help="audit(closure_passes=...): which of LBFGS's closure evaluations in a step "
                         "are watched (default: first, as audit() does)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: time.perf_counter; cpu: time.process_time")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", "Anomaly Detection has been enabled")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    names = args.only or list(MODELS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, {args.clock} clock, "
          f"{args.triples} triples per model")
    print(f"{'model':12} {'params':>7} {'plain ms':>9} {'audit/plain [95% CI]':>27} "
          f"{'extra ms':>9} {'anomaly/plain':>14} {'syncs/step plain/audit/anomaly':>31}")
    for name in names:
        r = measure(name, args.triples, clock, args.ignore, args.closure_passes)
        mid, lo, hi = median_ci(r["paired"]["audit"])
        anomaly = statistics.median(r["paired"]["anomaly"])
        s = r["syncs"]
        print(
            f"{name:12} {r['params'] / 1e6:6.2f}M {statistics.median(r['times']['plain']) * 1e3:9.1f} "
            f"{mid:12.3f}x [{lo:.3f}-{hi:.3f}] {statistics.median(r['extra']) * 1e3:9.3f} "
            f"{anomaly:13.3f}x "
            f"{s['plain']:>13.1f} / {s['audit']:.1f} / {s['anomaly']:.1f}"
        )
        if r["findings"]:
            print(f"  (the audit reported {r['findings']} finding(s) on this model)")
    print("ratios: the median over triples of each triple's step-time ratio to its plain step; the "
          "interval is a distribution-free 95% confidence interval for that median; extra ms: the "
          "median of each triple's audited minus plain step time")
    for name in names:
        print(f"{name}: time inside torch-audit's hooks and checks (cProfile, 10 audited steps): "
              f"{hook_share(name, ignore=args.ignore, closure_passes=args.closure_passes):.1%} of the step")


if __name__ == "__main__":
    main()
