"""Speed of diffnb.learn.gan: one generator + critic step of pix2pix and pix2pixHD through fastai, against the same
networks, losses and optimiser in a plain PyTorch loop (the fastai overhead), and translation speed.

pix2pix: U-Net (ngf 64, depth from the size) + 70×70 PatchGAN (ndf 64), LSGAN + 100·L1.
pix2pixHD: global generator (ngf 64, 3 downsamplings, 9 residual blocks) + 2-scale critic (ndf 64), LSGAN + 10·FM.
A "step" is one critic update and one generator update, each on its own batch, as fastai's FixedGANSwitcher
alternates them; Adam β = (0.5, 0.999), lr 2e-4. On the CPU, times are process CPU times on one thread (robust to
other jobs sharing the machine); on a GPU, wall times after synchronisation. Reported: seconds per step (best of the
timed steps' mean over `--steps` steps), the fastai/plain ratio, and translated patterns per second (`translate`, bs 16).
Usage: python bench/bench_gan.py [--sizes 64 128] [--bs 2] [--steps 2] [--device cpu|cuda] [--threads 1]
"""
import argparse
import time

import torch
import torch.nn.functional as F

from diffnb.learn.gan import (pix2pix_unet, pix2pixhd_global, patchgan, multiscale_critic, ConditionalCritic,
                              critic_adv_loss, generator_adv_loss, feature_matching_loss, pair_dataloaders,
                              gan_learner, translate)
from fastai.callback.core import Callback


def nets(arch, size):
    if arch == "pix2pix": return pix2pix_unet(1, 1, size), patchgan(2), dict(l1_weight=100.0, fm_weight=0.0)
    return pix2pixhd_global(1, 1), multiscale_critic(2, num_D=2), dict(l1_weight=0.0, fm_weight=10.0)


def clock_for(device): return time.process_time if device == "cpu" else time.perf_counter


def sync(device):
    if device == "cuda": torch.cuda.synchronize()


class TrainTimer(Callback):
    "Clock of the training batches only (validation excluded); the first `skip` batches are warm-up."
    order = 100
    def __init__(self, clock, device, skip=2): self.clock, self.device, self.skip, self.t = clock, device, skip, []
    def before_batch(self):
        if self.training: sync(self.device); self.t0 = self.clock()
    def after_batch(self):
        if self.training: sync(self.device); self.t.append(self.clock() - self.t0)


def fastai_step(arch, size, bs, steps, device):
    torch.manual_seed(0)
    n = bs * (2 * steps + 2) + bs   # warm-up step, timed steps, one validation batch
    x, y = torch.randn(n, 1, size, size), torch.randn(n, 1, size, size)
    dls = pair_dataloaders(x, y, bs=bs, valid_pct=bs / n, device=device)
    G, D, kw = nets(arch, size)
    timer = TrainTimer(clock_for(device), device)
    learn = gan_learner(dls, G, D, metrics=False, cbs=[timer], **kw)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    t = timer.t[2:]                 # drop the warm-up critic + generator batches
    return sum(t) / (len(t) / 2), learn.model.generator


def plain_step(arch, size, bs, steps, device):
    "The same alternation in plain PyTorch: critic update on batch 2k, generator update on batch 2k+1."
    torch.manual_seed(0)
    G, D, kw = nets(arch, size)
    G, D = G.to(device).train(), ConditionalCritic(D).to(device).train()
    optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    clock = clock_for(device)
    times = []
    for k in range(steps + 1):
        xs = [torch.randn(bs, 1, size, size, device=device) for _ in range(2)]
        ys = [torch.randn(bs, 1, size, size, device=device) for _ in range(2)]
        sync(device); t0 = clock()
        # critic step
        x, y = xs[0], ys[0]
        D.cond = x
        for p in G.parameters(): p.requires_grad_(False)
        for p in D.parameters(): p.requires_grad_(True)
        with torch.no_grad(): fake = G(x)
        loss_d = critic_adv_loss(D(y), D(fake))
        optD.zero_grad(); loss_d.backward(); optD.step()
        # generator step
        x, y = xs[1], ys[1]
        D.cond = x
        for p in G.parameters(): p.requires_grad_(True)
        for p in D.parameters(): p.requires_grad_(False)
        fake = G(x)
        fake_pred = D(fake)
        loss_g = generator_adv_loss(fake_pred)
        if kw["fm_weight"]:
            with torch.no_grad(): real_pred = D(y)
            loss_g = loss_g + kw["fm_weight"] * feature_matching_loss(fake_pred, real_pred)
        if kw["l1_weight"]: loss_g = loss_g + kw["l1_weight"] * F.l1_loss(fake, y)
        optG.zero_grad(); loss_g.backward(); optG.step()
        sync(device)
        if k: times.append(clock() - t0)   # step 0 is warm-up
    return sum(times) / len(times)


def translate_rate(G, size, device, n=32):
    x = torch.randn(n, 1, size, size)
    translate(G, x[:16], bs=16, progress=False, device=device)   # warm-up
    clock = clock_for(device)
    sync(device); t0 = clock()
    translate(G, x, bs=16, progress=False, device=device)
    sync(device)
    return n / (clock() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--archs", nargs="+", default=["pix2pix", "pix2pixhd"])
    ap.add_argument("--bs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"diffnb.learn.gan — {a.device}, {a.threads} thread(s), batch {a.bs}, {a.steps} timed steps")
    print(f"{'arch':10s} {'size':>5s} {'fastai s/step':>14s} {'plain s/step':>13s} {'ratio':>6s} {'translate /s':>13s}")
    for arch in a.archs:
        for size in a.sizes:
            t_fa, G = fastai_step(arch, size, a.bs, a.steps, a.device)
            t_pl = plain_step(arch, size, a.bs, a.steps, a.device)
            rate = translate_rate(G, size, a.device)
            print(f"{arch:10s} {size:5d} {t_fa:14.3f} {t_pl:13.3f} {t_fa / t_pl:6.2f} {rate:13.1f}", flush=True)


if __name__ == "__main__":
    main()
