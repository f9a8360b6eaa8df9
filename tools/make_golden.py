#!/usr/bin/python3
"""Write the golden files of tests/test_golden.cpp (docs/golden.md) from an independent model.

For each tiny configuration below: draw every parameter and batch-norm statistic in PyTorch,
build tools/prsr_torch.py's model in float64 with them, run one training-mode forward and
backward on a fixed batch of 2 random images, and store in tests/data/golden_<name>.bin the
inputs, the parameters (by prsr's names, in prsr's layout), the A and B logits at 8 of the 256
levels, both loss terms, every parameter gradient and the running statistics after the step.
Values are computed in float64 from float32-rounded parameters and stored as float32.

    /usr/bin/python3 tools/make_golden.py [--out tests/data] [--only c1_k3]

File format (little-endian):
    8 bytes   magic "PRSRGLD1"
    u32       header length, then the header: the model config as ModelConfig::to_string()
              writes it ("colors=1 size=8 ... loss=pixel")
    u32       tensor count, then per tensor:
              u32 name length, name (ASCII); u32 ndim, ndim x u32 dims; float32 values (row-major)
"""
import argparse
import os
import struct
import sys

import torch

from prsr_torch import LEVELS, PRSR, prsr_tensors

BATCH = 2
KEPT_LEVELS = [0, 37, 73, 110, 146, 182, 219, 255]  # round(k * 255 / 7): both ends, spread out

# prsr's ModelConfig fields, in ModelConfig::to_string() order. Tiny on purpose (the files stay
# small): size 8 is the smallest the model allows; 2 gated layers; batch norm on. Most of a file
# is the two 1x1 convs to C * 256 logits (cond.out, prior.head2): values and gradients.
CONFIGS = {
    "c1_k3": dict(colors=1, size=8, cond_channels=3, cond_blocks=1, batch_norm=1, prior_channels=4,
                  prior_layers=2, kernel=3, first_kernel=5, head=4, loss="pixel", seed=101),
    "c3_k5": dict(colors=3, size=8, cond_channels=3, cond_blocks=1, batch_norm=1, prior_channels=6,
                  prior_layers=2, kernel=5, first_kernel=7, head=6, loss="pixel", seed=102),
    # 4 prior channels and a head of 4 split unevenly over 3 colours (groups 0, 0, 1, 2).
    "c3_k3": dict(colors=3, size=8, cond_channels=3, cond_blocks=1, batch_norm=1, prior_channels=4,
                  prior_layers=2, kernel=3, first_kernel=3, head=4, loss="pixel", seed=103),
}
CONFIG_KEYS = ["colors", "size", "cond_channels", "cond_blocks", "batch_norm", "prior_channels",
               "prior_layers", "kernel", "first_kernel", "head", "loss"]


def config_string(cfg):
    return " ".join(f"{k}={cfg[k]}" for k in CONFIG_KEYS)


def build(cfg):
    return PRSR(C=cfg["colors"], cond_channels=cfg["cond_channels"], cond_blocks=cfg["cond_blocks"],
                channels=cfg["prior_channels"], layers=cfg["prior_layers"], kernel=cfg["kernel"],
                first_kernel=cfg["first_kernel"], head=cfg["head"], size=cfg["size"],
                batch_norm=bool(cfg["batch_norm"]))


def to_prsr(t, transposed):
    """A PyTorch tensor in prsr's layout: transposed-conv weights swap dims 0 and 1; vectors
    become [c, 1, 1, 1]."""
    t = t.detach()
    if transposed:
        t = t.transpose(0, 1).contiguous()
    if t.dim() == 1:
        t = t.reshape(-1, 1, 1, 1)
    return t


def draw(name, shape, gen):
    """Values for one prsr tensor (shape in prsr's layout), float32-representable doubles.
    Weights He-normal over the prsr fan-in, *not* masked: prsr and PyTorch both multiply by the
    mask on every forward pass, so a missing or wrong mask changes the logits. Biases, batch-norm
    scales/shifts and running statistics random, so that no value is special."""
    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)
    if name.endswith(".w"):
        fan_in = shape[1] * shape[2] * shape[3]
        v = torch.randn(shape, generator=gen, dtype=torch.float64) * (2.0 / fan_in) ** 0.5
    elif name.endswith(".gamma") or name.endswith(".running_var"):
        v = uniform(0.5, 1.5)
    else:  # .b, .beta, .running_mean
        v = uniform(-0.3, 0.3)
    return v.float().double()


def make(cfg):
    gen = torch.Generator().manual_seed(cfg["seed"])
    C, S = cfg["colors"], cfg["size"]
    model = build(cfg).double()
    named = prsr_tensors(model)
    params = {}
    with torch.no_grad():
        for pname, t, transposed in named:
            shape = list(to_prsr(t, transposed).shape)
            v = draw(pname, shape, gen)
            params[pname] = v
            v = v.reshape(t.shape) if not transposed else v.transpose(0, 1).reshape(t.shape)
            t.copy_(v)
    images = torch.randint(0, 256, (BATCH, C, S, S), generator=gen).to(torch.uint8)

    model.train()  # batch norm on batch statistics, running statistics updated
    a, b, ce_ab, ce_a = model.parts(images)
    (ce_ab + ce_a).backward()
    x, _, _ = model.inputs(images)

    def kept(logits):  # [n, C*256, s, s] -> [n, C*8, s, s], channel colour*8 + k
        idx = [c * LEVELS + l for c in range(C) for l in KEPT_LEVELS]
        return logits.detach()[:, idx]

    tensors = [("input.images", images.double()), ("input.x", x),
               ("logits.levels", torch.tensor(KEPT_LEVELS, dtype=torch.float64)),
               ("logits.a", kept(a)), ("logits.b", kept(b)),
               ("loss.ce_ab", ce_ab.detach().reshape(1)), ("loss.ce_a", ce_a.detach().reshape(1))]
    tensors += [("param." + n, params[n]) for n, _, _ in named]
    tensors += [("grad." + n, to_prsr(t.grad, tr)) for n, t, tr in named if t.requires_grad]
    tensors += [("after." + n, to_prsr(t, tr)) for n, t, tr in named if not t.requires_grad]

    # For docs/golden.md: how far float32 PyTorch is from this float64 answer.
    m32 = build(cfg)
    m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    with torch.no_grad():  # the running statistics as drawn, not as updated by the step above
        for n, t, _ in prsr_tensors(m32):
            if not t.requires_grad:
                t.copy_(params[n].reshape(t.shape))
    m32.train()
    a32, b32, ce_ab32, ce_a32 = m32.parts(images)
    (ce_ab32 + ce_a32).backward()
    worst_grad = max(float((to_prsr(t.grad, tr).double() - to_prsr(t64.grad, tr)).abs().max())
                     for (n, t, tr), (_, t64, _) in zip(prsr_tensors(m32), named) if t.requires_grad)
    print(f"  PyTorch float32 vs float64: logits A {float((a32.double() - a.detach()).abs().max()):.2e}, "
          f"B {float((b32.double() - b.detach()).abs().max()):.2e}, "
          f"CE(A+B) {abs(float(ce_ab32) - float(ce_ab)):.2e}, CE(A) {abs(float(ce_a32) - float(ce_a)):.2e}, "
          f"worst gradient {worst_grad:.2e} (max abs)")
    return config_string(cfg), tensors


def write(path, header, tensors):
    with open(path, "wb") as f:
        f.write(b"PRSRGLD1")
        h = header.encode("ascii")
        f.write(struct.pack("<I", len(h)) + h)
        f.write(struct.pack("<I", len(tensors)))
        for name, t in tensors:
            n = name.encode("ascii")
            f.write(struct.pack("<I", len(n)) + n)
            f.write(struct.pack("<I", t.dim()) + struct.pack(f"<{t.dim()}I", *t.shape))
            vals = t.detach().reshape(-1).float().tolist()
            f.write(struct.pack(f"<{len(vals)}f", *vals))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data"))
    ap.add_argument("--only", choices=sorted(CONFIGS), help="write one file only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    for name, cfg in CONFIGS.items():
        if args.only and name != args.only:
            continue
        print(f"golden_{name}: {config_string(cfg)}, batch {BATCH}, seed {cfg['seed']}")
        header, tensors = make(cfg)
        path = os.path.join(args.out, f"golden_{name}.bin")
        write(path, header, tensors)
        print(f"  wrote {os.path.normpath(path)}: {len(tensors)} tensors, {os.path.getsize(path)} bytes; "
              f"CE(A+B) {float(tensors[5][1]):.6f}, CE(A) {float(tensors[6][1]):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
