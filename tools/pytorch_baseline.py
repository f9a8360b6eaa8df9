#!/usr/bin/python3
"""PyTorch baseline for the prsr training benchmark (optional; not part of the build or tests).

The model of docs/design.md section 1 (tools/prsr_torch.py, written layer for layer after
model/model.h): conditioning ResNet A(x) with batch norm, gated PixelCNN prior B(y) with
colour-masked convolutions (the mask applied as weight * mask on every forward pass, as prsr
does), loss CE(A + B) + CE(A). It times full training steps (forward, backward, RMSProp) on random uint8 images, so its
images/s can be set beside `build/bench_train` on the same machine.

Run with the system Python and Debian's PyTorch (apt-get install python3-torch):

    /usr/bin/python3 tools/pytorch_baseline.py [--colors 3] [--batch 32] [--steps 5]
                                               [--warmup 2] [--threads 2]

With jemalloc (apt-get install libjemalloc2), which matters a great deal on this machine:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/bin/python3 tools/pytorch_baseline.py
"""
import argparse
import statistics
import sys
import time

import torch

from prsr_torch import LEVELS, PRSR  # the model, shared with tools/make_golden.py


def check_causality(model, C):
    """Gradient of the prior's logit (pixel i, colour c) w.r.t. every input sub-pixel at or after
    it must be exactly zero, and non-zero for the earlier neighbours (above-right included)."""
    y = torch.randn(1, C, 32, 32, requires_grad=True)
    b = model.prior(y)
    bad = 0
    for (r, col, c) in [(5, 7, 0), (5, 7, C - 1), (0, 0, 0), (31, 31, C - 1)]:
        y.grad = None
        b[0, c * LEVELS:(c + 1) * LEVELS, r, col].sum().backward(retain_graph=True)
        g = y.grad[0]
        for ci in range(C):
            for rr in range(32):
                for cc in range(32):
                    later = (rr, cc, ci) >= (r, col, c)
                    if later and g[ci, rr, cc] != 0:
                        bad += 1
        if r > 0 and col < 31 and g[:, r - 1, col + 1].abs().sum() == 0:
            bad += 1  # blind spot
    print(f"causality check: {'ok' if bad == 0 else f'{bad} violations'}")
    return bad == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--colors", type=int, default=3, choices=(1, 3))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check", action="store_true", help="check the prior's causality first")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = PRSR(C=args.colors)
    model.train()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fwd = model.forward_flops_per_image()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"python {sys.version.split()[0]} ({sys.executable})")
    print(f"model: C={args.colors}, default config (32 ch, 20 layers, k 5, first k 7, head 1024, "
          f"cond 32 ch x 6 blocks/stage)")
    print(f"  {n_params} parameters, {fwd / 1e9:.3f} GFLOP/image forward, "
          f"{3 * fwd / 1e9:.3f} GFLOP/image per training step (3x)")

    if args.check and not check_causality(model, args.colors):
        return 1

    opt = torch.optim.RMSprop(model.parameters(), lr=4e-4, alpha=0.95, momentum=0.9, eps=1e-8)
    data = torch.randint(0, 256, (args.batch, args.colors, 32, 32), dtype=torch.uint8)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _, _ = model(data)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    times, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med, cmed = statistics.median(times), statistics.median(cpu)
    print(f"\nbatch {args.batch}, {args.threads} threads, {args.steps} timed steps (median):")
    print(f"  {args.batch / med:.1f} images/s   {med * 1e3:.0f} ms/step   "
          f"{3 * fwd * args.batch / med / 1e9:.1f} GFLOP/s achieved")
    print(f"  CPU time {cmed * 1e3:.0f} ms/step ({cmed / med:.2f} cores busy); loss {loss:.3f}")
    print("  step times (ms): " + " ".join(f"{t * 1e3:.0f}" for t in times))


if __name__ == "__main__":
    sys.exit(main())
