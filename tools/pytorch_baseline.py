#!/usr/bin/python3
"""PyTorch baseline for the prsr training benchmark (optional; not part of the build or tests).

The model of DESIGN.md section 1, written layer for layer after model/model.h: conditioning
ResNet A(x) with batch norm, gated PixelCNN prior B(y) with colour-masked convolutions (the
mask applied as weight * mask on every forward pass, as prsr does), loss CE(A + B) + CE(A).
It times full training steps (forward, backward, RMSProp) on random uint8 images, so its
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
import torch.nn as nn
import torch.nn.functional as F

LEVELS = 256


def colour_mask(co, ci, kh, kw, kind, colors, period_in, period_out, tap_y, tap_x):
    """engine/mask.h: 1 where weight [o, i, ky, kx] is allowed. Channel f of a layer with P
    channels per period is in colour group (f mod P) * C / P; at the current-pixel tap, output
    group g may read input group g' only if g' < g (mask A) or g' <= g (mask B)."""
    m = torch.ones(co, ci, kh, kw)
    go = (torch.arange(co) % period_out) * colors // period_out
    gi = (torch.arange(ci) % period_in) * colors // period_in
    allowed = gi[None, :] < go[:, None] if kind == "A" else gi[None, :] <= go[:, None]
    m[:, :, tap_y, tap_x] = allowed.float()
    return m


class Conv(nn.Module):
    """A convolution with explicit (top, bottom, left, right) zero padding and an optional
    colour mask, applied as weight * mask on every forward pass."""

    def __init__(self, ci, co, kh, kw, bias=True, pad=(0, 0, 0, 0), mask=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(co, ci, kh, kw))
        self.bias = nn.Parameter(torch.zeros(co)) if bias else None
        nn.init.normal_(self.weight, 0.0, (2.0 / (ci * kh * kw)) ** 0.5)  # He-normal
        self.pad = pad
        if mask is not None:
            kind, colors, p_in, p_out, ty, tx = mask
            self.register_buffer("mask", colour_mask(co, ci, kh, kw, kind, colors, p_in, p_out, ty, tx))
            with torch.no_grad():
                self.weight.mul_(self.mask)
        else:
            self.mask = None

    def forward(self, x):
        w = self.weight * self.mask if self.mask is not None else self.weight
        t, b, l, r = self.pad
        if t == b and l == r:
            return F.conv2d(x, w, self.bias, padding=(t, l))
        return F.conv2d(F.pad(x, (l, r, t, b)), w, self.bias)

    def flops(self, positions):
        co, ci, kh, kw = self.weight.shape
        return 2.0 * co * ci * kh * kw * positions


class ResBlock(nn.Module):
    """r = relu(bn(conv3x3(x))); out = relu(x + bn(conv3x3(r))); convs before bn: no bias."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = Conv(c, c, 3, 3, bias=False, pad=(1, 1, 1, 1))
        self.bn1 = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
        self.conv2 = Conv(c, c, 3, 3, bias=False, pad=(1, 1, 1, 1))
        self.bn2 = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)

    def forward(self, x):
        r = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(r)))


class Conditioning(nn.Module):
    """A(x): conv3x3 C->c, nb blocks at 8x8, then twice (deconv 3x3 s2 p1 op1, relu, nb blocks),
    conv1x1 c -> C*256."""

    def __init__(self, C, c, nb):
        super().__init__()
        self.stem = Conv(C, c, 3, 3, pad=(1, 1, 1, 1))
        self.stages = nn.ModuleList([nn.Sequential(*[ResBlock(c) for _ in range(nb)]) for _ in range(3)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1)
                                 for _ in range(2)])
        for u in self.up:  # He-normal on the [ci, co, 3, 3] weight, fan_in = ci * 9 as in prsr
            nn.init.normal_(u.weight, 0.0, (2.0 / (c * 9)) ** 0.5)
            nn.init.zeros_(u.bias)
        self.out = Conv(c, C * LEVELS, 1, 1)

    def forward(self, x):
        h = self.stages[0](self.stem(x))
        for s in (1, 2):
            h = self.stages[s](F.relu(self.up[s - 1](h)))
        return self.out(h)


def gate(z):
    c = z.shape[1] // 2
    return torch.tanh(z[:, :c]) * torch.sigmoid(z[:, c:])


def down_shift(x):
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


class GatedLayer(nn.Module):
    def __init__(self, C, p, k):
        super().__init__()
        self.v = Conv(p, 2 * p, k // 2 + 1, k, pad=(k // 2, 0, k // 2, k // 2))
        self.h = Conv(p, 2 * p, 1, k // 2 + 1, pad=(0, 0, k // 2, 0), mask=("B", C, p, p, 0, k // 2))
        self.link = Conv(2 * p, 2 * p, 1, 1)
        self.res = Conv(p, p, 1, 1, mask=("B", C, p, p, 0, 0))

    def forward(self, v, h):
        v_pre = self.v(v)
        h_pre = self.h(h) + self.link(down_shift(v_pre))
        return gate(v_pre), h + self.res(gate(h_pre))


class Prior(nn.Module):
    """B(y): gated PixelCNN with vertical and horizontal stacks and colour masks."""

    def __init__(self, C, p, L, k, k0, head):
        super().__init__()
        self.first_v = Conv(C, p, k0 // 2 + 1, k0, pad=(k0 // 2, 0, k0 // 2, k0 // 2))
        self.first_h = Conv(C, p, 1, k0 // 2 + 1, pad=(0, 0, k0 // 2, 0), mask=("A", C, C, p, 0, k0 // 2))
        self.layers = nn.ModuleList([GatedLayer(C, p, k) for _ in range(L)])
        self.head1 = Conv(p, head, 1, 1, mask=("B", C, p, head, 0, 0))
        self.head2 = Conv(head, C * LEVELS, 1, 1, mask=("B", C, head, C * LEVELS, 0, 0))

    def forward(self, y):
        v, h = self.first_v(y), self.first_h(y)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head2(F.relu(self.head1(F.relu(h))))


class PRSR(nn.Module):
    def __init__(self, C=3, cond_channels=32, cond_blocks=6, channels=32, layers=20, kernel=5,
                 first_kernel=7, head=1024, size=32):
        super().__init__()
        self.C, self.size = C, size
        self.cond = Conditioning(C, cond_channels, cond_blocks)
        self.prior = Prior(C, channels, layers, kernel, first_kernel, head)

    @staticmethod
    def ce(logits, target):
        # logits [n, C*256, h, w] laid out [colour][level]; target [n, C, h, w] int64.
        n, _, hh, ww = logits.shape
        z = logits.view(n, -1, LEVELS, hh, ww).transpose(1, 2)  # [n, 256, C, h, w]
        return F.cross_entropy(z, target)  # mean over the n*C*h*w sub-pixels

    def forward(self, y_bytes):
        """y_bytes: [n, C, 32, 32] uint8. Returns (loss, CE(A+B), CE(A))."""
        yi = y_bytes.to(torch.int32)
        x = (F.avg_pool2d(yi.float(), 4) * 16 + 8).floor_divide(16)  # (sum of 16 + 8) / 16
        x = x / 127.5 - 1
        y = y_bytes.float() / 127.5 - 1
        target = y_bytes.long()
        a = self.cond(x)
        b = self.prior(y)
        ce_ab = self.ce(a + b, target)
        ce_a = self.ce(a, target)
        return ce_ab + ce_a, ce_ab, ce_a

    def forward_flops_per_image(self):
        """2 * multiply-adds of every conv, counted as model.h does (deconv at input positions)."""
        s, lo = self.size, self.size // 4
        f = self.cond.stem.flops(lo * lo)
        sides = (lo, 2 * lo, 4 * lo)
        for st in range(3):
            if st > 0:
                ci, co, kh, kw = self.cond.up[st - 1].weight.shape
                f += 2.0 * co * ci * kh * kw * sides[st - 1] ** 2
            for b in self.cond.stages[st]:
                f += b.conv1.flops(sides[st] ** 2) + b.conv2.flops(sides[st] ** 2)
        f += self.cond.out.flops(s * s)
        p = self.prior
        f += p.first_v.flops(s * s) + p.first_h.flops(s * s)
        for g in p.layers:
            f += sum(m.flops(s * s) for m in (g.v, g.h, g.link, g.res))
        f += p.head1.flops(s * s) + p.head2.flops(s * s)
        return f


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
