"""Benchmark of diffnb.learn.models: training and inference images per second of every architecture, and the
overhead of a fastai Learner over a plain PyTorch loop.

1. Throughput: for each architecture at 64² and 128² (float images, batch 8), images/s of a training step
   (forward, loss, backward, Adam step) and of inference (eval mode, no_grad). Baseline measured in the same
   run: torchvision's own ResNet-18 (1-channel stem, plain fc) — `resnet(18)` (fastai body + head) should be
   within a few per cent of it.
2. Learner overhead: the same conversion CNN, data (in-memory tensors) and optimiser (torch RMSprop) trained for
   a few epochs with validation by a plain PyTorch loop (the baseline), by `Learner.fit` on the same torch
   DataLoaders (target: within 10 % of the plain loop), and by `Learner.fit` on fastai's `DataLoaders.from_dsets`
   (with num_workers=0, and with fastai's default worker processes, whose start-up every epoch costs ~1 s here).

    OMP_NUM_THREADS=1 python bench/bench_learn.py [--sizes 64 128] [--steps 2] [--bs 8] [--quick]

GPU figures are printed when CUDA is available.
"""
import argparse
import os
import time
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from diffnb.learn.models import conversion_cnn, wide_resnet_ued, wide_resnet, resnet, conv_vae

ARCHS = {  # name -> (factory of image size, n_in, task)
    "conversion_cnn": (lambda s: conversion_cnn(img_size=s), 1, "regress"),
    "wide_resnet_ued (k=4)": (lambda s: wide_resnet_ued(n_in=2), 2, "classify"),
    "wide_resnet WRN-16-4": (lambda s: wide_resnet(16, 4, n_in=1, n_out=1), 1, "regress"),
    "resnet(18)": (lambda s: resnet(18, n_in=1, n_out=19), 1, "classify"),
    "resnet(50)": (lambda s: resnet(50, n_in=1, n_out=19), 1, "classify"),
    "conv_vae (latent 4)": (lambda s: conv_vae(img_size=s), 1, "vae"),
}


def torchvision_resnet18(s):
    "Baseline: torchvision's ResNet-18 with a 1-channel stem and a 19-class fc."
    m = torchvision.models.resnet18(weights=None, num_classes=19)
    m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return m


def loss_of(task, out, x, y):
    if task == "regress": return F.mse_loss(out.squeeze(-1), y)
    if task == "classify": return F.cross_entropy(out, y)
    recon, mu, logvar = out
    return F.binary_cross_entropy_with_logits(recon, x) - 0.5 * (1 + logvar - mu ** 2 - logvar.exp()).mean()


def throughput(make, n_in, task, size, bs, steps, device="cpu"):
    "(train images/s, inference images/s) of one architecture at one size."
    torch.manual_seed(0)
    m = make(size).to(device)
    x = torch.rand(bs, n_in, size, size, device=device)
    y = torch.randint(0, 7 if n_in == 2 else 19, (bs,), device=device) if task == "classify" else torch.rand(bs, device=device)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def train_step():
        opt.zero_grad(); loss_of(task, m(x), x, y).backward(); opt.step()
    m.train(); train_step(); sync()                       # warm-up
    t0 = time.perf_counter()
    for _ in range(steps): train_step()
    sync(); t_train = time.perf_counter() - t0
    m.eval()
    with torch.no_grad():
        m(x); sync()
        t0 = time.perf_counter()
        for _ in range(steps): m(x)
        sync(); t_inf = time.perf_counter() - t0
    return bs * steps / t_train, bs * steps / t_inf


def learner_overhead(n_train=256, n_valid=64, bs=32, epochs=2, repeat=2, size=64):
    """Seconds per epoch of a plain PyTorch loop, of `Learner.fit` on the same torch DataLoaders (the Learner's own
    overhead: callbacks, recorder, loss/metric bookkeeping) and of `Learner.fit` on fastai's
    `DataLoaders.from_dsets` (the whole fastai stack), in the main process and with fastai's default workers. Same model, data, optimiser (torch RMSprop), validation each epoch."""
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    from fastai.optimizer import OptimWrapper
    import fastai.callback.progress  # noqa: F401  (Learner.no_bar)

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n_train + n_valid, 1, size, size, generator=g), torch.rand(n_train + n_valid, 1, generator=g)
    train, valid = list(zip(x[:n_train], y[:n_train])), list(zip(x[n_train:], y[n_train:]))
    opt_func = partial(OptimWrapper, opt=torch.optim.RMSprop)

    def torch_dls():
        return (torch.utils.data.DataLoader(train, batch_size=bs, shuffle=True, drop_last=True),
                torch.utils.data.DataLoader(valid, batch_size=bs))

    def fastai_fit(fastai_loader, **dl_kwargs):
        torch.manual_seed(0)
        dls = DataLoaders.from_dsets(train, valid, bs=bs, device="cpu", **dl_kwargs) if fastai_loader else DataLoaders(*torch_dls())
        learn = Learner(dls, conversion_cnn(img_size=size), loss_func=MSELossFlat(), opt_func=opt_func)
        with learn.no_bar(), learn.no_logging():
            t0 = time.perf_counter(); learn.fit(epochs, 1e-3); return time.perf_counter() - t0

    def plain_fit():
        torch.manual_seed(0)
        tdl, vdl = torch_dls()
        m = conversion_cnn(img_size=size)
        opt = torch.optim.RMSprop(m.parameters(), 1e-3)
        t0 = time.perf_counter()
        for _ in range(epochs):
            m.train()
            for xb, yb in tdl:
                loss = F.mse_loss(m(xb), yb); loss.backward(); opt.step(); opt.zero_grad()
            m.eval()
            with torch.no_grad(): sum(F.mse_loss(m(xb), yb).item() * len(xb) for xb, yb in vdl) / n_valid
        return time.perf_counter() - t0

    runs = {"plain": plain_fit, "learner": partial(fastai_fit, False), "learner+fastai_dl": partial(fastai_fit, True, num_workers=0),
            "learner+fastai_dl_workers": partial(fastai_fit, True)}
    for f in runs.values(): f()                              # warm-up
    times = {k: [] for k in runs}
    for _ in range(repeat):                                  # interleaved, so all see the same CPU load
        for k, f in runs.items(): times[k].append(f())
    return {k: min(v) / epochs for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="64² only, ResNet-50 and WRN-16-4 skipped")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    sizes = [64] if a.quick else a.sizes
    archs = {k: v for k, v in ARCHS.items() if not (a.quick and ("50" in k or "16-4" in k))}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {a.bs}, {a.steps} timed steps")
    print(f"{'architecture':24s} {'size':>5s} {'params':>8s} {'train img/s':>12s} {'infer img/s':>12s}")
    for s in sizes:
        # baseline and resnet(18) interleaved, best of 3, so that both see the same CPU load
        make18, n18, task18 = archs["resnet(18)"]
        runs = [(throughput(torchvision_resnet18, 1, "classify", s, a.bs, a.steps), throughput(make18, n18, task18, s, a.bs, a.steps))
                for _ in range(3)]
        base = tuple(max(r[0][i] for r in runs) for i in range(2))
        ours18 = tuple(max(r[1][i] for r in runs) for i in range(2))
        nb = sum(p.numel() for p in torchvision_resnet18(s).parameters()) / 1e6
        print(f"{'torchvision resnet18':24s} {s:5d} {nb:7.2f}M {base[0]:12.1f} {base[1]:12.1f}  (baseline)")
        for name, (make, n_in, task) in archs.items():
            tr, inf = ours18 if name == "resnet(18)" else throughput(make, n_in, task, s, a.bs, a.steps)
            n = sum(p.numel() for p in make(s).parameters()) / 1e6
            extra = f"  ({tr / base[0]:.2f}x / {inf / base[1]:.2f}x baseline)" if name == "resnet(18)" else ""
            print(f"{name:24s} {s:5d} {n:7.2f}M {tr:12.1f} {inf:12.1f}{extra}")
    t = learner_overhead(repeat=1 if a.quick else 3)
    print(f"Learner overhead (conversion_cnn 64², 256 train + 64 valid images, bs 32, best of runs), s/epoch:")
    print(f"  plain PyTorch loop              {t['plain']:.3f}")
    print(f"  Learner.fit, same torch loaders {t['learner']:.3f}  ({100 * (t['learner'] / t['plain'] - 1):+.1f} %, target <= +10 %)")
    print(f"  Learner.fit, fastai from_dsets  {t['learner+fastai_dl']:.3f}  ({100 * (t['learner+fastai_dl'] / t['plain'] - 1):+.1f} %, "
          f"num_workers=0)")
    print(f"  Learner.fit, fastai from_dsets  {t['learner+fastai_dl_workers']:.3f}  "
          f"({100 * (t['learner+fastai_dl_workers'] / t['plain'] - 1):+.1f} %, fastai's default worker processes, started every epoch)")
    if torch.cuda.is_available():
        for s in sizes:
            for name, (make, n_in, task) in archs.items():
                tr, inf = throughput(make, n_in, task, s, 64, 10, device="cuda")
                print(f"GPU {name:20s} {s:5d} train {tr:10.1f} img/s, infer {inf:10.1f} img/s ({torch.cuda.get_device_name()})")
    else:
        print("GPU: not available on this machine (the same models run with .to('cuda'))")


if __name__ == "__main__":
    main()
