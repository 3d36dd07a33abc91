"""Ragged layer-wise projection + node attention (the weight VAE's encoder entry) vs pad-to-max.

The weight graph's node feature lengths are very uneven (paper NS FNO, App. I: 1603 nodes, 6 to 5185
features, mean 1688). The VAE maps each node to width D with its layer's own matrix, then attends over all
nodes. Two ways to run the projection:

    ragged     ops.ragged_proj on the packed layout: FLOPs 2 E F D, reads E F + K D values (F = sum of all
               node lengths = weights per expert, K = sum of the layers' feature lengths)
    pad-to-max every node zero-padded to max f, one [f_max, D] matrix per layer: FLOPs 2 E N f_max D,
               reads E N f_max + G f_max D values (the usual way to batch ragged tokens)

followed by the same node attention (4 N^2 D FLOPs per expert). Times are medians of a few runs, forward
(+ backward where said), one thread by default; peak memory is the peak of live tensor bytes while the
inputs are built and one forward step runs (tracked op by op, the same on CPU and GPU). The bytes/FLOP model and the H100 roofline time
(3.35 TB/s HBM, ~67 TFLOP/s FP32 CUDA-core, ~495 TFLOP/s TF32 tensor-core) are printed beside them.

    python bench/bench_node_attention.py [--threads 1] [--experts 1] [--d-model 1024] [--backward]
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from dynadiff_fast.experts.configs import expert_config
from dynadiff_fast.ops.node_attention import node_attention
from dynadiff_fast.ops.ragged_proj import RaggedLayout
from dynadiff_fast.weightspace.graph import WeightGraph

HBM_BPS, FP32_FLOPS, TF32_FLOPS = 3.35e12, 67e12, 495e12
CONFIGS = {"ns_paper": ("navier_stokes", "paper"), "kolmogorov_tiny": ("kolmogorov", "tiny")}


def layout_of(name: str) -> RaggedLayout:
    graph = WeightGraph.from_config(expert_config(*CONFIGS[name]))
    return RaggedLayout.from_group_sizes(list(zip(graph.group_sizes, graph.feature_lengths)))


def make_inputs(lay: RaggedLayout, E: int, D: int, device: str, pad: bool, grad: bool):
    """Packed values [E, F] and stacked weights [K, D]; or, padded, one [E, n_g, f_max] block and one
    [f_max, D] matrix per layer (separate tensors, so autograd never scatters into a whole-model buffer)."""
    g = torch.Generator().manual_seed(0)
    sizes = lay.sizes
    if not pad:
        values = torch.randn(E, lay.num_values, generator=g)
        weight = torch.randn(lay.group_feats[-1], D, generator=g) * 0.01
        return values.to(device).requires_grad_(grad), weight.to(device).requires_grad_(grad)
    f_max = max(f for _, f in sizes)
    values = [torch.nn.functional.pad(torch.randn(E, n, f, generator=g), (0, f_max - f)) for n, f in sizes]
    weight = [torch.nn.functional.pad(torch.randn(f, D, generator=g) * 0.01, (0, 0, 0, f_max - f)) for _, f in sizes]
    return [v.to(device).requires_grad_(grad) for v in values], [w.to(device).requires_grad_(grad) for w in weight]


def padded_proj(values, weight) -> torch.Tensor:
    """Per layer [E, n_g, f_max] @ [f_max, D] (the zero padding does the ragged part)."""
    return torch.cat([v @ w for v, w in zip(values, weight)], 1)


def run(name: str, E: int, D: int, heads: int, device: str, pad: bool, backward: bool, attn: bool):
    lay = layout_of(name).to(device)
    values, weight = make_inputs(lay, E, D, device, pad, backward)

    def step():
        y = padded_proj(values, weight) if pad else lay.proj(values, weight)
        if attn:
            q = y.view(E, -1, heads, D // heads).transpose(1, 2)
            y = node_attention(q, q, q)
        if backward:
            y.sum().backward()
        return y

    return step


def timed(step, device: str, repeats: int) -> float:
    step()  # warm-up (Triton compile, allocator)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages created under it (CPU or GPU): every op output is counted once
    per storage until the last Python tensor viewing that storage is freed."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.refs: dict[int, list[int]] = {}  # storage data_ptr -> [tensors alive, bytes]

    def _release(self, key: int) -> None:
        ref = self.refs[key]
        ref[0] -= 1
        if ref[0] == 0:
            self.live -= ref[1]
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes():
                key = t.untyped_storage().data_ptr()
                if key not in self.refs:
                    self.refs[key] = [0, t.untyped_storage().nbytes()]
                    self.live += self.refs[key][1]
                    self.peak = max(self.peak, self.live)
                self.refs[key][0] += 1
                weakref.finalize(t, self._release, key)
        return out


def peak_bytes(args: tuple) -> int:
    """Peak live tensor bytes of building the inputs and running one forward step (no autograd: tensors the
    autograd graph keeps have no Python owner to track)."""
    name, E, D, heads, device, pad, _, attn = args
    with torch.no_grad(), LiveBytes() as mem:
        run(name, E, D, heads, device, pad, False, attn)()
    return mem.peak


def model(lay: RaggedLayout, E: int, D: int, pad: bool) -> tuple[float, float]:
    """(FLOPs, bytes) of the forward projection."""
    N, K, F = lay.num_nodes, lay.group_feats[-1], lay.num_values
    f_max = max(f for _, f in lay.sizes)
    if pad:
        return 2.0 * E * N * f_max * D, 4.0 * (E * N * f_max + len(lay.sizes) * f_max * D + E * N * D)
    return 2.0 * E * F * D, 4.0 * (E * F + K * D + E * N * D)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--experts", type=int, default=1, help="E, experts per batch")
    p.add_argument("--d-model", type=int, default=None,
                   help="D (paper: 1024, the GPU default; 256 on CPU keeps the default run near a minute, and the "
                   "projection's ratio does not depend on D)")  # fmt: skip
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    E, D = args.experts, args.d_model or (1024 if device == "cuda" else 256)
    mode = "fwd+bwd" if args.backward else "fwd"
    print(f"device {device}, threads {args.threads}, E={E}, D={D}, heads={args.heads}, {mode}")
    for name in args.configs:
        lay = layout_of(name)
        fs = [f for _, f in lay.sizes]
        f_max, mean_f = max(fs), lay.num_values / lay.num_nodes
        print(f"\n== {name}: {lay.num_nodes} nodes, {len(fs)} layers, node length {min(fs)}..{f_max} "
              f"(mean {mean_f:.0f}), {lay.num_values} weights; padding factor {f_max / mean_f:.2f}x")  # fmt: skip
        rows = {}
        for attn in (False, True):
            for pad in (False, True):
                label = ("pad-to-max" if pad else "ragged") + (" + attention" if attn else "")
                call = (name, E, D, args.heads, device, pad, args.backward, attn)
                t = timed(run(*call), device, args.repeats)
                mem = float("nan") if args.no_memory else peak_bytes(call)
                rows[label] = (t, mem)
                flops, nbytes = model(lay, E, D, pad)
                roof = max(flops / FP32_FLOPS, nbytes / HBM_BPS)
                roof_tf32 = max(flops / TF32_FLOPS, nbytes / HBM_BPS)
                extra = "" if attn else (f"   proj model {flops / 1e9:.2f} GFLOP, {nbytes / 1e6:.1f} MB, "
                                         f"H100 roofline fwd {roof * 1e6:.0f} us FP32 / {roof_tf32 * 1e6:.0f} us TF32")  # fmt: skip
                print(f"  {label:<26} {t * 1e3:9.2f} ms   peak {mem / 2**20:8.1f} MiB{extra}")
        for attn in ("", " + attention"):
            (tr, mr), (tp, mp_) = rows["ragged" + attn], rows["pad-to-max" + attn]
            print(f"  ratio pad-to-max / ragged{attn}: time {tp / tr:.2f}x, peak memory {mp_ / mr:.2f}x")


if __name__ == "__main__":
    main()
