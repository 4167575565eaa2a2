"""Smoke run of a compact 2-D CNN on the speckle study's protocol (radii fixed per class), through the batch reader.

Generates a `speckle.poly_study` store (19 classes, N = 2…20), splits it three ways (stratified: train / valid /
test), trains the workflow's compact CNN (`conversion_cnn`, conv/pool stages 32-64-128-256, one dense layer of 256)
for a few epochs from `batch_dataloaders` and reports validation and held-out test macro-F1, the first-moment
baseline on the same split, and the wall times. Not a result: a check that the path runs end to end at a small scale.

Usage: python bench/speckle_study_smoke.py [--n 2280] [--size 64] [--epochs 2] [--radii-seed 0] [--threads 1]
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2280, help="patterns (N drawn uniformly from 2..20)")
    p.add_argument("--size", type=int, default=64, help="pixels per side")
    p.add_argument("--k-max", type=float, default=0.2, help="largest |k| on the axes [rad/px]")
    p.add_argument("--block", type=int, default=3, help="blocked square at k = 0 [pixels]")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--radii-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--store", default=None, help="keep the store here (reused when it exists)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from fastai.torch_core import set_seed
    from diffnb.core import default_device
    from diffnb.data import generate, get_sampler, make_split, open_store
    from diffnb.data.batches import ChunkBatchDL, batch_dataloaders
    from diffnb.learn.learner import classification_learner
    from diffnb.learn.metrics import macro_f1
    from diffnb.sim.speckle import NearestClassMean

    tmp = Path(tempfile.mkdtemp())
    try:
        sampler = get_sampler("speckle.poly_study", n=a.size, k_step=a.k_max / (a.size // 2), block=a.block,
                              radii_seed=a.radii_seed)
        path = Path(a.store) if a.store else tmp / "study.zarr"
        t = time.perf_counter()
        st = open_store(path) if path.exists() else generate(sampler, a.n, path, seed=a.seed, chunk_size=256,
                                                             scheduler="synchronous", progress=False)
        t_gen = time.perf_counter() - t
        y = st.targets[:]
        folds = np.where(make_split(st, "stratified", valid_pct=0.1, seed=a.seed) == 1, 2, 0)  # 10 % test
        rest = np.flatnonzero(folds == 0)
        folds[rest[make_split(len(rest), "stratified", valid_pct=0.1 / 0.9, by=y[rest], seed=a.seed + 1) == 1]] = 1
        device = default_device()
        dls = batch_dataloaders(st, split=folds, fold=1, holdout=2, bs=a.bs, device=device, seed=a.seed, cache=True)
        set_seed(a.seed, reproducible=True)
        learn = classification_learner(dls, "conversion_cnn", {"channels": [32, 64, 128, 256], "hidden": [256],
                                                               "img_size": a.size})
        t = time.perf_counter()
        with learn.no_bar(): learn.fit_one_cycle(a.epochs, a.lr)
        t_fit = time.perf_counter() - t
        test = ChunkBatchDL(st, np.flatnonzero(folds == 2), bs=256, device=device)
        n_classes = len(st.classes)
        f1 = {}
        for name, dl in (("valid", dls.valid), ("test", test)):
            preds, targs = learn.get_preds(dl=dl)
            f1[name] = macro_f1(preds.argmax(1), targs, n_classes=n_classes)
        m1 = st.param("first_moment")
        ncm = NearestClassMean().fit(m1[folds == 0], y[folds == 0])
        f1["first_moment_test"] = macro_f1(torch.as_tensor(ncm.predict(m1[folds == 2])), torch.as_tensor(y[folds == 2]),
                                           n_classes=n_classes)
        print(f"{sampler.name} radii_seed {a.radii_seed}, {a.n} patterns {a.size}², train/valid/test "
              f"{(folds == 0).sum()}/{(folds == 1).sum()}/{(folds == 2).sum()}, device {device}, {a.threads} thread(s)")
        print(f"generate {t_gen:.1f} s; fit {a.epochs} epochs {t_fit:.1f} s ({t_fit / a.epochs:.1f} s/epoch)")
        print(f"macro-F1: CNN valid {f1['valid']:.3f}, CNN test {f1['test']:.3f}; first-moment baseline test "
              f"{f1['first_moment_test']:.3f}")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
