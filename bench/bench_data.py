"""Benchmark of diffnb.data.

1. Generation throughput (samples/s written to a local Zarr store) of a cheap simulator with Dask LocalCluster
   worker processes: 1 and 2 workers (cluster start-up excluded), and the in-process synchronous loop as baseline.
2. Read throughput (samples/s) of a fastai DataLoader from the Zarr store (0 and 2 loader workers) vs the same
   DataLoader over an in-memory tensor.

Usage: python bench/bench_data.py [--n 2048] [--size 64] [--sampler toy.slits] [--config JSON]
Numbers depend on the machine's load; ratios are measured in the same run.
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
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--sampler", default="toy.slits")
    p.add_argument("--config", default="{}", help='sampler config as JSON, e.g. \'{"n": 129}\' for speckle')
    a = p.parse_args()
    torch.set_num_threads(1)
    from dask.distributed import Client, LocalCluster
    from fastai.data.core import TfmdDL
    from fastai.torch_core import TensorCategory
    from diffnb.data import generate, get_sampler, dataloaders, FloatImage, verify

    import json
    cfg = ({"image_size": a.size} if a.sampler.startswith("toy.") else {}) | json.loads(a.config)
    sampler = get_sampler(a.sampler, **cfg)
    tmp = Path(tempfile.mkdtemp())
    print(f"sampler {sampler.name} v{sampler.version}, image {tuple(sampler.image_shape)}, n={a.n}, chunk={a.chunk}")
    rates = {}
    t = time.perf_counter()
    generate(sampler, a.n, tmp / "sync.zarr", seed=0, chunk_size=a.chunk, scheduler="synchronous", progress=False)
    rates["synchronous"] = a.n / (time.perf_counter() - t)
    for w in (1, 2):
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None) as cl, Client(cl) as c:
            c.run(torch.set_num_threads, 1)
            c.submit(lambda: __import__("diffnb.data")).result()  # warm the workers' imports
            t = time.perf_counter()
            generate(sampler, a.n, tmp / f"w{w}.zarr", seed=0, chunk_size=a.chunk, client=c, progress=False)
            rates[f"{w} worker(s)"] = a.n / (time.perf_counter() - t)
        assert verify(tmp / f"w{w}.zarr").ok
    for k, v in rates.items(): print(f"generate  {k:>12}: {v:8.0f} samples/s")
    print(f"generate  speed-up 2 vs 1 worker: {rates['2 worker(s)'] / rates['1 worker(s)']:.2f}x "
          f"(machine has {__import__('os').cpu_count()} cores, shared)")

    # read throughput: one pass over the training set
    store = tmp / "sync.zarr"
    def epoch_rate(dl):
        n = 0; t = time.perf_counter()
        for b in dl: n += len(b[0])
        return n / (time.perf_counter() - t)
    read = {}
    for nw in (0, 2):
        dls = dataloaders(store, bs=64, device="cpu", num_workers=nw, valid_pct=0.1)
        epoch_rate(dls.train)  # warm-up (worker start)
        read[f"zarr, {nw} workers"] = epoch_rate(dls.train)
    from diffnb.data import open_store
    st = open_store(store)
    x, y = st[:]
    items = [(FloatImage(x[i]), TensorCategory(y[i])) for i in range(len(x))]
    mem = TfmdDL(items, bs=64, shuffle=True, drop_last=True, num_workers=0, device="cpu")
    epoch_rate(mem)
    read["in-memory tensor"] = epoch_rate(mem)
    for k, v in read.items(): print(f"read      {k:>16}: {v:8.0f} samples/s")
    for nw in (0, 2):
        print(f"read      zarr ({nw} workers) / in-memory: {read[f'zarr, {nw} workers'] / read['in-memory tensor']:.3f}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
