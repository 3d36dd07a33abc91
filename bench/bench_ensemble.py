"""Rolling out a whole ensemble in one batched call vs one expert alone: per-expert cost ratios, one thread,
measured in the same run (best of --reps, interleaved).

    python bench/bench_ensemble.py [--threads 1] [--reps 2] [--k 32] [--max-n 256]

The benchmark preset (Lambda-Omega ``bench``): 13 test environments x K = 32 members, each member rolled out
from its environment's 3 test trajectories for 40 steps (``experts.ensemble.rollout_ensemble``: N*K = 416
experts in one call); "alone": one expert on the same 3 trajectories, as a ``BatchedFNO`` of one expert and as
the neuraloperator module stepped in a loop. Target (issue 13): batched per-expert cost <= 1/3 of alone.

Then the per-expert cost of N = 1 .. --max-n generated-like experts (weights without requires_grad, rolled out
outside no_grad as a user would) on 4 trajectories for 20 steps: flat in N, since generated experts build no
autograd graph (issue 14: with one kept for every step of every expert it grew 1.8x from N = 1 to 64), so the
memory is the output's plus one chunk of activations (``BatchedFNO.CHUNK_BYTES``).

FLOP model of one expert step on one 32x32 sample (multiply-adds x 2): lifting (4 -> 32 -> 16 channels),
per Fourier layer the truncated DFT (W then H, forward and inverse), the complex mode mix, the linear skip
and the channel MLP (16 -> 8 -> 16), projection (16 -> 32 -> 2); printed as GFLOP/s and as a fraction of a
1024^2 SGEMM timed in the same run (the core's practical FP32 peak).
"""

from __future__ import annotations

import argparse
import time

import torch

from dynadiff_fast.data.presets import get_preset
from dynadiff_fast.experts.batched_fno import BatchedFNO
from dynadiff_fast.experts.configs import expert_config
from dynadiff_fast.experts.ensemble import rollout_ensemble
from dynadiff_fast.stages.bench import report


def flops_per_sample_step(cfg, h: int, w: int) -> float:
    """The FLOP model above (2 per multiply-add), one expert, one sample, one step."""
    c, hid = cfg.in_channels, cfg.hidden_channels
    lift, proj = cfg.lifting_channels, cfg.projection_channels
    m1, m2 = cfg.weight_modes
    p = h * w
    grid = 2 if cfg.positional_embedding == "grid" else 0
    pointwise = (c + grid) * lift + lift * hid + hid * proj + proj * cfg.out_channels
    mlp = int(hid * cfg.channel_mlp_expansion)
    per_layer = hid * hid + 2 * hid * mlp  # linear skip + channel MLP, per point
    dft = 2 * hid * (h * w * 2 * m2 + 2 * m1 * h * 2 * m2)  # forward and inverse, along W then H
    mix = 4 * hid * hid * m1 * m2  # complex multiply-adds, 4 real each
    return 2.0 * (pointwise * p + cfg.n_layers * (per_layer * p + dft + mix))


def sgemm_rate() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * 1024**3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_experts(cfg, n: int, seed: int = 0) -> BatchedFNO:
    """n experts (distinct weights: a few random modules, cycled; the cost does not depend on the values)."""
    torch.manual_seed(seed)
    modules = [cfg.build().eval() for _ in range(min(n, 8))]
    base = BatchedFNO.from_modules(modules)
    stacked = {k: v.detach()[torch.arange(n) % len(modules)].contiguous() for k, v in base.stacked().items()}
    return BatchedFNO.from_stacked(cfg, stacked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--k", type=int, default=32, help="members per environment")
    ap.add_argument("--max-n", type=int, default=256, help="largest N of the per-expert cost curve")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = get_preset("lambda_omega", "bench")
    cfg = expert_config("lambda_omega", "bench")
    n_env, b, steps = preset.env_grid[0][2], preset.n_test_traj, preset.n_frames
    h = w = preset.system["resolution"]
    e = n_env * args.k
    print(
        f"ensemble rollout, Lambda-Omega bench: {n_env} test envs x K={args.k} = {e} experts, B={b} trajectories, "
        f"{steps} steps, {h}x{w}, float32 CPU, {args.threads} thread(s)"
    )
    ensemble = make_experts(cfg, e)
    one = ensemble.select([0])
    module = one.to_modules()[0].eval()
    x0 = torch.randn(n_env, b, cfg.in_channels, h, w)

    def alone_module():
        x = x0[0]
        for _ in range(steps):
            x = module(x)

    runs = {
        "batched": lambda: rollout_ensemble(ensemble, x0, steps),
        "alone (BatchedFNO, E=1)": lambda: one.rollout(x0[0], steps),
        "alone (neuraloperator module)": alone_module,
        "alone, one trajectory": lambda: one.rollout(x0[0, :1], steps),  # separates per-call from per-sample cost
    }
    best = {k: float("inf") for k in runs}
    with torch.no_grad():
        rollout_ensemble(ensemble.select(slice(0, args.k)), x0[:1], 1)  # warm-up: allocator, DFT matrices, grid
        one.rollout(x0[0], 1)
        module(x0[0])
        for _ in range(args.reps):
            for k, fn in runs.items():
                best[k] = min(best[k], _timed(fn))
    per_expert = best["batched"] / e
    peak = sgemm_rate()
    work = flops_per_sample_step(cfg, h, w) * b * steps  # one expert's rollout
    print(f"FLOP model: {work / 1e9:.2f} GFLOP per expert rollout; 1024^2 SGEMM here: {peak / 1e9:.1f} GFLOP/s")
    single = best.pop("alone, one trajectory")
    for k, t in best.items():
        cost = t / e if k == "batched" else t
        print(
            f"  {k:30s} {1e3 * cost:7.1f} ms per expert, {work / cost / 1e9:5.1f} GFLOP/s ({work / cost / peak:.2f} of SGEMM)"
        )
        if k != "batched":
            report(f"ensemble rollout, batched per expert / {k}", per_expert / t, 1 / 3, higher=False)
    # alone = f + B m (f per call: dispatch and small-op overhead, m per trajectory); batching removes f only
    m = (best["alone (BatchedFNO, E=1)"] - single) / (b - 1)
    f = single - m
    print(
        f"  alone, per call {1e3 * f:.1f} ms + per trajectory {1e3 * m:.1f} ms: batching that only removes the "
        f"per-call part reaches {b * m / (f + b * m):.3f} of alone at best"
    )
    scaling(cfg, args.max_n, h, w)


def scaling(cfg, max_n: int, h: int, w: int) -> None:
    """Per-expert cost and output memory over N, generated-like experts rolled out outside no_grad."""
    x0 = torch.randn(4, cfg.in_channels, h, w)
    print("per-expert cost over N (4 trajectories, 20 steps, outside no_grad, weights without requires_grad):")
    base = at16 = None
    n = 1
    while n <= max_n:
        experts = make_experts(cfg, n)
        experts.rollout(x0, 1)
        t0 = time.perf_counter()
        out = experts.rollout(x0, 20)
        t = (time.perf_counter() - t0) / n
        base = base or t
        print(
            f"  N={n:5d}: {1e3 * t:6.1f} ms per expert ({t / base:.2f}x N=1); output "
            f"{out.numel() * out.element_size() / 2**20:7.1f} MiB, autograd graph kept: {out.grad_fn is not None}"
        )
        at16 = t if n == 16 else at16
        last = (n, t)
        n = 16 if n == 1 else 4 * n
    if at16 is not None and last[0] > 16:
        report(f"per-expert cost, N={last[0]} / N=16", last[1] / at16, 1.0, higher=False)


if __name__ == "__main__":
    main()
