"""The prsr model (docs/design.md section 1) in PyTorch, layer for layer after model/model.h.

Shared by tools/pytorch_baseline.py (the throughput benchmark) and tools/make_golden.py (the
golden files of tests/test_golden.cpp). Conditioning ResNet A(x) with batch norm, gated
PixelCNN prior B(y) with colour-masked convolutions (the mask applied as weight * mask on every
forward pass, as prsr does), loss CE(A + B) + CE(A). Nothing here imports prsr: it is written
from the design, so that agreement with prsr is evidence, not a tautology.

`prsr_tensors(model)` names every parameter and batch-norm buffer as prsr's ParamSet does
(model/model.h: "cond.stem.w", "prior.layer0.h.b", ...), in prsr's layout.
"""
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
        w = self.weight * self.mask.to(self.weight.dtype) if self.mask is not None else self.weight
        t, b, l, r = self.pad
        if t == b and l == r:
            return F.conv2d(x, w, self.bias, padding=(t, l))
        return F.conv2d(F.pad(x, (l, r, t, b)), w, self.bias)

    def flops(self, positions):
        co, ci, kh, kw = self.weight.shape
        return 2.0 * co * ci * kh * kw * positions


class ResBlock(nn.Module):
    """r = relu(bn(conv3x3(x))); out = relu(x + bn(conv3x3(r))); convs before bn: no bias.
    Without batch norm: r = relu(conv3x3(x) + b1); out = relu(x + conv3x3(r) + b2)."""

    def __init__(self, c, batch_norm=True):
        super().__init__()
        self.batch_norm = batch_norm
        self.conv1 = Conv(c, c, 3, 3, bias=not batch_norm, pad=(1, 1, 1, 1))
        self.bn1 = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1) if batch_norm else nn.Identity()
        self.conv2 = Conv(c, c, 3, 3, bias=not batch_norm, pad=(1, 1, 1, 1))
        self.bn2 = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1) if batch_norm else nn.Identity()

    def forward(self, x):
        r = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(r)))


class Conditioning(nn.Module):
    """A(x): conv3x3 C->c, nb blocks at 8x8, then twice (deconv 3x3 s2 p1 op1, relu, nb blocks),
    conv1x1 c -> C*256."""

    def __init__(self, C, c, nb, batch_norm=True):
        super().__init__()
        self.stem = Conv(C, c, 3, 3, pad=(1, 1, 1, 1))
        self.stages = nn.ModuleList([nn.Sequential(*[ResBlock(c, batch_norm) for _ in range(nb)])
                                     for _ in range(3)])
        # PyTorch's transposed-conv weight is [ci, co, 3, 3]; prsr's is [co, ci, 3, 3].
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
                 first_kernel=7, head=1024, size=32, batch_norm=True):
        super().__init__()
        self.C, self.size = C, size
        self.cond = Conditioning(C, cond_channels, cond_blocks, batch_norm)
        self.prior = Prior(C, channels, layers, kernel, first_kernel, head)

    @staticmethod
    def ce(logits, target):
        # logits [n, C*256, h, w] laid out [colour][level]; target [n, C, h, w] int64.
        n, _, hh, ww = logits.shape
        z = logits.view(n, -1, LEVELS, hh, ww).transpose(1, 2)  # [n, 256, C, h, w]
        return F.cross_entropy(z, target)  # mean over the n*C*h*w sub-pixels

    def inputs(self, y_bytes):
        """y_bytes [n, C, s, s] uint8 -> (x [n, C, s/4, s/4], y [n, C, s, s], target), x and y in
        the parameters' dtype, normalised v / 127.5 - 1; x is the 4x4 box average rounded as
        data::box_downsample4 does: (sum of 16 + 8) / 16 in integers."""
        dt = self.cond.stem.weight.dtype
        sums = F.avg_pool2d(y_bytes.double(), 4) * 16  # exact integer sums
        xq = torch.div(sums + 8, 16, rounding_mode="floor")
        x = xq.to(dt) / 127.5 - 1
        y = y_bytes.to(dt) / 127.5 - 1
        return x, y, y_bytes.long()

    def parts(self, y_bytes):
        """Everything the golden test compares: (A logits, B logits, CE(A+B), CE(A))."""
        x, y, target = self.inputs(y_bytes)
        a = self.cond(x)
        b = self.prior(y)
        return a, b, self.ce(a + b, target), self.ce(a, target)

    def forward(self, y_bytes):
        """y_bytes: [n, C, 32, 32] uint8. Returns (loss, CE(A+B), CE(A))."""
        _, _, ce_ab, ce_a = self.parts(y_bytes)
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


def prsr_tensors(model):
    """[(prsr name, tensor, transposed)] for every parameter and batch-norm running statistic,
    named as model/model.h declares them. `transposed`: the tensor is a ConvTranspose2d weight
    [ci, co, k, k], which prsr stores as [co, ci, k, k] (swap dims 0 and 1 both ways). Biases and
    batch-norm vectors are [c] here and [c, 1, 1, 1] in prsr (same order of values)."""
    out = []

    def conv(name, c):
        out.append((name + ".w", c.weight, False))
        if c.bias is not None:
            out.append((name + ".b", c.bias, False))

    def bn(name, b):
        out.append((name + ".gamma", b.weight, False))
        out.append((name + ".beta", b.bias, False))
        out.append((name + ".running_mean", b.running_mean, False))
        out.append((name + ".running_var", b.running_var, False))

    cond = model.cond
    conv("cond.stem", cond.stem)
    for s, stage in enumerate(("cond.low", "cond.mid", "cond.high")):
        if s > 0:
            u = cond.up[s - 1]
            out.append((f"cond.up{s}.w", u.weight, True))
            out.append((f"cond.up{s}.b", u.bias, False))
        for i, blk in enumerate(cond.stages[s]):
            conv(f"{stage}.{i}.conv1", blk.conv1)
            if blk.batch_norm:
                bn(f"{stage}.{i}.bn1", blk.bn1)
            conv(f"{stage}.{i}.conv2", blk.conv2)
            if blk.batch_norm:
                bn(f"{stage}.{i}.bn2", blk.bn2)
    conv("cond.out", cond.out)
    p = model.prior
    conv("prior.first_v", p.first_v)
    conv("prior.first_h", p.first_h)
    for l, g in enumerate(p.layers):
        for part in ("v", "h", "link", "res"):
            conv(f"prior.layer{l}.{part}", getattr(g, part))
    conv("prior.head1", p.head1)
    conv("prior.head2", p.head2)
    return out
