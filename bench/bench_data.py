"""Benchmark of diffnb.data.

1. Generation throughput (samples/s written to a local Zarr store) of a cheap simulator with Dask LocalCluster
   worker processes: 1 and 2 workers (cluster start-up excluded), and the in-process synchronous loop as baseline.
2. Read throughput (samples/s) over the training fold of one store, in one run:
   - the per-item path, `dataloaders(store, ...)` (fastai, one item at a time; 0 and 2 loader workers);
   - the batch path, `batch_dataloaders(store, ...)`: streamed (every epoch reads and decompresses the chunks) and
     cached (the first epoch reads and checks the chunks, later epochs gather from memory), "epoch 1" on a freshly
     opened store (checksums computed), "later" once the loader is warm;
   - the same fastai DataLoader over an in-memory tensor (reference);
   and the compute of one training epoch of a compact 2-D CNN at the same size, so that the share of an epoch spent
   waiting for data can be read off.

Usage:
  python bench/bench_data.py [--n 2048] [--size 64] [--sampler toy.slits] [--config JSON]
  python bench/bench_data.py --sampler speckle.mono --config '{"n": 129}' --n 4096 --chunk 256 --read-only
  python bench/bench_data.py --store PATH   # read benchmarks on an existing store
Numbers depend on the machine's load: each read rate is the best of --repeat passes, ratios are measured in the same run.
"""
import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def epoch_rate(dl):
    "Samples/s of one pass over `dl` (batches only consumed)."
    n = 0; t = time.perf_counter()
    for b in dl: n += len(b[0])
    return n / (time.perf_counter() - t), n


def compact_cnn(n_classes, width=16):
    "A compact 2-D CNN: four conv–BN–ReLU–pool blocks, global average pool, linear read-out."
    from torch import nn
    layers, c = [], 1
    for k in range(4):
        layers += [nn.Conv2d(c, width * 2**k, 3, padding=1, bias=False), nn.BatchNorm2d(width * 2**k), nn.ReLU(), nn.MaxPool2d(2)]
        c = width * 2**k
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes))


def compute_per_sample(shape, n_classes, bs, n_batches=6):
    "Seconds per sample of forward + backward + Adam step of `compact_cnn` on random batches of `shape`."
    model = compact_cnn(n_classes); opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(bs, *shape); y = torch.randint(0, n_classes, (bs,))
    def step():
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(n_batches): step()
    return (time.perf_counter() - t) / (n_batches * bs)


def bench_generate(a, sampler, tmp):
    from dask.distributed import Client, LocalCluster
    from diffnb.data import generate, verify
    rates = {}
    for w in (1, 2):
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None) as cl, Client(cl) as c:
            c.run(torch.set_num_threads, 1)
            c.submit(lambda: __import__("diffnb.data")).result()  # warm the workers' imports
            t = time.perf_counter()
            generate(sampler, a.n, tmp / f"w{w}.zarr", seed=0, chunk_size=a.chunk, client=c, progress=False)
            rates[f"{w} worker(s)"] = a.n / (time.perf_counter() - t)
        assert verify(tmp / f"w{w}.zarr").ok
    return rates


def bench_read(store, bs, repeat):
    from fastai.data.core import TfmdDL
    from fastai.torch_core import TensorCategory
    from diffnb.data import FloatImage, dataloaders, open_store
    from diffnb.data.batches import batch_dataloaders
    read = {}
    best = lambda dl: max(epoch_rate(dl)[0] for _ in range(repeat))  # best of `repeat` passes: the least disturbed
    for nw in (0, 2):
        dls = dataloaders(store, bs=bs, device="cpu", num_workers=nw, valid_pct=0.1)
        epoch_rate(dls.train)  # warm-up (worker start; every chunk checked)
        read[f"per-item, {nw} workers"] = best(dls.train)
    for cache in (False, True):
        name = "batch, cached" if cache else "batch, streamed"
        read[f"{name}, epoch 1"] = max(epoch_rate(batch_dataloaders(open_store(store), bs=bs, device="cpu", valid_pct=0.1,
                                                                    cache=cache).train)[0] for _ in range(repeat))
        dls = batch_dataloaders(store, bs=bs, device="cpu", valid_pct=0.1, cache=cache)
        epoch_rate(dls.train)
        read[f"{name}, later"] = best(dls.train)
    st = open_store(store)
    x, y = st[:]
    items = [(FloatImage(x[i]), TensorCategory(y[i])) for i in range(len(x))]
    mem = TfmdDL(items, bs=bs, shuffle=True, drop_last=True, num_workers=0, device="cpu")
    epoch_rate(mem)
    read["per-item, in-memory tensor"] = best(mem)
    n_train = dls.train.n
    return read, n_train, tuple(st.meta["sampler"]["image_shape"]), len(st.classes or [1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3, help="passes per read measurement; the best is reported")
    p.add_argument("--sampler", default="toy.slits")
    p.add_argument("--config", default="{}", help='sampler config as JSON, e.g. \'{"n": 129}\' for speckle')
    p.add_argument("--store", default=None, help="read benchmarks only, on this existing store")
    p.add_argument("--read-only", action="store_true", help="skip the Dask worker generation benchmark")
    a = p.parse_args()
    torch.set_num_threads(1)
    from diffnb.data import generate, get_sampler

    tmp = Path(tempfile.mkdtemp())
    try:
        if a.store is None:
            cfg = ({"image_size": a.size} if a.sampler.startswith("toy.") else {}) | json.loads(a.config)
            sampler = get_sampler(a.sampler, **cfg)
            print(f"sampler {sampler.name} v{sampler.version}, image {tuple(sampler.image_shape)}, n={a.n}, chunk={a.chunk}")
            t = time.perf_counter()
            generate(sampler, a.n, tmp / "sync.zarr", seed=0, chunk_size=a.chunk, scheduler="synchronous", progress=False)
            rates = {"synchronous": a.n / (time.perf_counter() - t)}
            if not a.read_only: rates |= bench_generate(a, sampler, tmp)
            for k, v in rates.items(): print(f"generate  {k:>12}: {v:8.0f} samples/s")
            if not a.read_only:
                print(f"generate  speed-up 2 vs 1 worker: {rates['2 worker(s)'] / rates['1 worker(s)']:.2f}x "
                      f"(machine has {os.cpu_count()} cores, shared)")
            store = tmp / "sync.zarr"
        else: store = Path(a.store)

        read, n_train, shape, n_classes = bench_read(store, a.bs, a.repeat)
        print(f"read: training fold of {n_train} samples of {shape}, bs {a.bs}, one thread")
        for k, v in read.items(): print(f"read      {k:>30}: {v:9.0f} samples/s")
        base = read["per-item, 0 workers"]
        for k in ("batch, streamed, later", "batch, cached, epoch 1", "batch, cached, later"):
            print(f"read      {k:>30} / per-item (0 workers): {read[k] / base:6.1f}x")
        c = compute_per_sample(shape, n_classes, a.bs)
        print(f"compute   compact 2-D CNN, forward + backward + step: {1 / c:8.0f} samples/s "
              f"({c * n_train:.1f} s per training epoch)")
        for k in ("per-item, 0 workers", "batch, streamed, later", "batch, cached, later"):
            d = 1 / read[k]
            print(f"epoch     data share with {k:>24}: {d / (d + c):6.1%} of the epoch")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
