"""Zoo fine-tuning throughput: experts per hour through BatchedFNO vs the same neuraloperator modules
fine-tuned one at a time (same data, same minibatch order, same Adam steps), in one run.

    python bench/bench_zoo.py [--threads 1] [--experts 8] [--steps 6] [--preset tiny]

Both paths train E experts of the preset's Kolmogorov architecture, each on its own environment's
one-step pairs: ``train.finetune_experts`` (one BatchedFNO, one Adam over the stack) and
``train.finetune_module`` (one FNO and one Adam per expert). A check that both produce the same weights
is printed with the timing. FLOP model: the FNO forward per sample, x3 for forward + backward; Adam
bytes: 4 reads/writes of (param, grad, m, v) per parameter per step.
"""

from __future__ import annotations

import argparse
import time

import torch

from dynadiff_fast.stages.bench import report

H100_FP32_FLOPS = 67e12  # ~67 TFLOP/s FP32 CUDA cores
H100_HBM_BYTES = 3.35e12  # 3.35 TB/s


def fno_flops_per_sample(cfg, h: int, w: int) -> float:
    """Multiply-adds x2 of one FNO forward on one ``[C, H, W]`` sample (pointwise layers + spectral mixing;
    FFTs as 5 N log2 N per channel)."""
    import math

    p = h * w
    c_in = cfg.in_channels + (2 if cfg.positional_embedding == "grid" else 0)
    hid, lift, proj, mlp = cfg.hidden_channels, cfg.lifting_channels, cfg.projection_channels, cfg.channel_mlp_channels
    pointwise = (c_in * lift + lift * hid) if lift else c_in * hid
    pointwise += cfg.n_layers * (hid * hid + 2 * hid * mlp) + hid * proj + proj * cfg.out_channels
    m1, m2 = cfg.weight_modes
    spectral = cfg.n_layers * (4 * hid * hid * m1 * m2)  # complex MAC = 4 real MACs
    ffts = cfg.n_layers * 2 * hid * 5 * p * math.log2(p) / 2  # rfft + irfft per channel
    return 2 * (pointwise * p + spectral) + ffts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--experts", type=int, default=8, help="experts fine-tuned (E)")
    ap.add_argument("--steps", type=int, default=6, help="Adam steps per expert")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3, help="field channels (tiny Kolmogorov: 3)")
    ap.add_argument("--preset", default="tiny", help="expert architecture preset (Kolmogorov)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats (the best is kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from dynadiff_fast.experts import train as tr
    from dynadiff_fast.experts.batched_fno import BatchedFNO
    from dynadiff_fast.experts.configs import expert_config

    cfg = expert_config("kolmogorov", args.preset, in_channels=args.channels, out_channels=args.channels)
    torch.manual_seed(0)
    base = {k: v for k, v in cfg.build().state_dict().items() if isinstance(v, torch.Tensor)}
    E, B, n = args.experts, args.batch_size, args.resolution
    # One epoch of exactly `steps` minibatches per expert: n_traj * T = steps * B pairs per environment.
    data = torch.randn(E, args.steps, B + 1, args.channels, n, n)

    def batched() -> BatchedFNO:
        experts = BatchedFNO.from_state_dicts(cfg, [base] * E)
        gens = [torch.Generator().manual_seed(e) for e in range(E)]
        tr.finetune_experts(experts, data, list(range(E)), gens, 1, 1e-3, B)
        return experts

    def one_at_a_time() -> list[torch.nn.Module]:
        modules = []
        for e in range(E):
            m = cfg.build()
            m.load_state_dict(base)
            tr.finetune_module(m, data, e, torch.Generator().manual_seed(e), 1, 1e-3, B)
            modules.append(m)
        return modules

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return best, out

    # warm-up (first calls import and register lazily)
    tr.finetune_module(cfg.build(), data[:1, :1], 0, torch.Generator(), 1, 1e-3, B)
    tr.finetune_experts(BatchedFNO.from_state_dicts(cfg, [base]), data[:1, :1], [0], [torch.Generator()], 1, 1e-3, B)
    t_mod, modules = timed(one_at_a_time)
    t_bat, experts = timed(batched)
    err = max(
        float((experts.stacked()[k][e].detach() - m.state_dict()[k]).abs().max())
        for e, m in enumerate(modules)
        for k in base
    )

    per_hour = lambda t: 3600 * E / t  # noqa: E731 - experts per hour at this many steps each
    print(f"# zoo fine-tuning, {E} experts x {args.steps} Adam steps, batch {B}, {n}x{n}, {args.preset} FNO "
          f"(hidden {cfg.hidden_channels}, {cfg.n_layers} layers, modes {cfg.n_modes}), {args.threads} thread(s)")  # fmt: skip
    print(f"one module at a time : {t_mod:8.3f} s  ({per_hour(t_mod):10.0f} experts/h)")
    print(f"BatchedFNO           : {t_bat:8.3f} s  ({per_hour(t_bat):10.0f} experts/h)")
    print(f"ratio (batched / one-at-a-time throughput): {t_mod / t_bat:.2f}x   max |weight difference| {err:.2e}")
    report("zoo fine-tuning, BatchedFNO / one module at a time", t_mod / t_bat, 3.0)

    flops = 3 * fno_flops_per_sample(cfg, n, n) * B * args.steps * E
    n_param = sum(v.numel() * (2 if v.is_complex() else 1) for v in base.values())
    adam_bytes = 4 * 4 * 4 * n_param * args.steps * E
    print(f"model: {flops / 1e9:.2f} GFLOP (fwd+bwd), Adam {adam_bytes / 1e6:.1f} MB moved; "
          f"achieved {flops / t_bat / 1e9:.2f} GFLOP/s batched, {flops / t_mod / 1e9:.2f} GFLOP/s one-at-a-time")  # fmt: skip
    bound = max(flops / H100_FP32_FLOPS, adam_bytes / H100_HBM_BYTES)
    print(f"H100 roofline: {bound * 1e3:.3f} ms for this work ({3600 * E / bound:.3g} experts/h at this size)")


if __name__ == "__main__":
    main()
