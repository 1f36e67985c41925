"""Worker for test_distributed.py (a module, so that spawned processes can import it)."""

from __future__ import annotations

import io
import json
import os
from datetime import timedelta


def run(rank: int, world: int, store: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import torch_audit
    from torch_audit.runtime import AuditFailure

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    result: dict = {"rank": rank}
    try:
        torch.manual_seed(0)
        base = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        reference = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        reference.load_state_dict(base.state_dict())
        model = DDP(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(1)
        batches = [(torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)) for _ in range(3)]

        # single-process reference: full batch, same initial weights
        F.mse_loss(reference(batches[0][0]), batches[0][1]).backward()
        ref_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in reference.parameters())).item()

        with torch_audit.audit() as session:
            exploding = next(c for c in session.checks if c.name == "exploding-gradient")
            for step, (x, y) in enumerate(batches):
                x, y = x[rank * 8:(rank + 1) * 8].clone(), y[rank * 8:(rank + 1) * 8]
                if step == 2 and rank == 1:
                    x[0, 0] = float("nan")  # only rank 1 sees the NaN
                opt.zero_grad()
                F.mse_loss(model(x), y).backward()
                opt.step()
            result["norm0"] = exploding._history[0]
        buf = io.StringIO()
        session.print_report(file=buf)
        result["printed"] = buf.getvalue()
        result["ref_norm"] = ref_norm
        result["findings"] = [(f.code, f.rank, f.step) for f in session.findings]

        # fail_fast: an error seen on rank 1 only stops both ranks at the same step
        raised_at = None
        with torch_audit.audit(select=["cross-entropy-single-class"], fail_fast=True):
            try:
                for step in range(4):
                    opt.zero_grad()
                    out = model(torch.randn(8, 4))
                    if rank == 1 and step == 1:
                        F.cross_entropy(out, torch.zeros(8, dtype=torch.long))
                    out.sum().backward()
                    opt.step()
            except AuditFailure as e:
                raised_at = (step, e.finding.code, e.finding.rank)
        result["raised_at"] = raised_at

        # FSDP2 (fully_shard) on CPU: norms of sharded gradients are summed over ranks
        try:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
        except ImportError:  # pragma: no cover - old torch
            result["fsdp"] = None
        else:
            mesh = init_device_mesh("cpu", (world,))
            torch.manual_seed(0)
            # a LayerNorm sharded on its own: nonfinite-activation reads its (gathered) weights
            # instead of its output, inside its forward; this must run without internal errors
            sharded = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 1))
            reference = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 1))
            reference.load_state_dict(sharded.state_dict())
            for layer in (sharded[0], sharded[1], sharded[3]):
                fully_shard(layer, mesh=mesh)
            fully_shard(sharded, mesh=mesh)
            fopt = torch.optim.SGD(sharded.parameters(), lr=0.01)
            x, y = batches[0]
            F.mse_loss(reference(x), y).backward()
            full = torch.sqrt(sum(p.grad.pow(2).sum() for p in reference.parameters())).item()
            with torch_audit.audit() as session:
                exploding = next(c for c in session.checks if c.name == "exploding-gradient")
                fopt.zero_grad()
                F.mse_loss(sharded(x[rank * 8:(rank + 1) * 8]), y[rank * 8:(rank + 1) * 8]).backward()
                fopt.step()
                result["fsdp"] = {"norm": exploding._history[0], "ref": full}
            result["fsdp"]["findings"] = [f.code for f in session.findings]
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(result, fh)
        dist.destroy_process_group()
