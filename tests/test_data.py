"Tests of diffnb.data: stores, resumable generation, verification, splits, DataLoaders, CLI."
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from diffnb.core import DiffnbValueError, DiffnbFileNotFoundError
from diffnb.data import (SlitSampler, Sampler, generate, verify, open_store, make_split, fold_indices, dataloaders,
                         get_sampler, register_sampler, available_samplers, generate_cli, verify_cli, LogIntensity,
                         SqrtIntensity, PercentileNormalize, FloatImage, repair, SAMPLERS)

REAL_SAMPLERS = [k for k in available_samplers() if not k.startswith("toy.")]


def tree(path):
    "Every file of a store (relative path → bytes), the root provenance without its creation time/version."
    p = Path(path)
    out = {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}
    root = json.loads(out.pop("zarr.json"))
    for k in ("created", "diffnb_version"): root["attributes"]["diffnb"].pop(k)
    out["zarr.json"] = json.dumps(root, sort_keys=True).encode()
    return out


def small(tmp_path, name="s.zarr", task="classification", n=40, seed=3, **kw):
    return generate(SlitSampler(image_size=16, task=task), n, tmp_path / name, seed=seed, chunk_size=8,
                    scheduler="synchronous", progress=False, **kw)


# ---------------------------------------------------------------- generation & reproducibility
def test_generate_verify_and_bitwise_reproducible(tmp_path):
    a, b = small(tmp_path, "a.zarr"), small(tmp_path, "b.zarr")
    assert verify(a.path).ok and a.complete
    assert tree(a.path) == tree(b.path)
    # the store holds exactly what the sampler gives for (seed, index), and the physics of the pattern
    x, y = a[0:40]
    xs, ys, ps = SlitSampler(image_size=16).sample(3, range(40))
    assert torch.equal(x, xs) and torch.equal(y, ys)
    np.testing.assert_array_equal(a.param("n_slits"), ps["n_slits"])
    np.testing.assert_array_equal(y.numpy() + 1, a.param("n_slits"))  # class index = number of slits − 1
    # Poisson counts: integer valued, mean total = dose
    assert np.all(x.numpy() == np.round(x.numpy()))
    np.testing.assert_allclose(x.sum(dim=(1, 2, 3)).mean().item(), 1e4, rtol=0.02)
    c = small(tmp_path, "c.zarr", seed=4)
    assert not np.array_equal(c.images[:], a.images[:])


def test_provenance_and_lazy_reading(tmp_path):
    s = small(tmp_path)
    m = s.meta
    assert m["sampler"]["name"] == "toy.slits" and m["sampler"]["version"] == "1"
    assert m["sampler"]["config"]["image_size"] == 16 and m["seed"] == 3 and m["n"] == 40
    assert m["diffnb_version"] and m["created"].endswith("+00:00")
    d = s.to_dask()
    assert d["images"].shape == (40, 1, 16, 16) and d["images"].chunks[0] == (8,) * 5
    np.testing.assert_array_equal(d["pitch_px"].compute(), s.param("pitch_px"))
    assert list(s.images.metadata.dimension_names) == ["sample", "channel", "y", "x"]
    np.testing.assert_array_equal(s.group["sample"][:], np.arange(40))
    assert list(s.params().columns) == sorted(["n_slits", "width_px", "pitch_px", "height_px", "dose"])
    # xarray view: named dimensions, the sample coordinate, parameters as per-sample variables, same values
    ds = s.to_xarray()
    assert ds["images"].dims == ("sample", "channel", "y", "x") and ds.sizes["sample"] == 40
    np.testing.assert_array_equal(ds["images"].values, s.images[:])
    np.testing.assert_array_equal(ds["sample"].values, np.arange(40))
    np.testing.assert_array_equal(ds["n_slits"].values, s.param("n_slits"))
    assert ds.attrs["diffnb"]["seed"] == 3 and "chunks_done" not in ds


# small, physical (unstandardised) configurations of the real simulators for a quick end-to-end run
REAL_CONFIG = {"speckle.mono": dict(n=65, standardise=False, block=0, n_max=6),
               "speckle.poly": dict(n=65, standardise=False, block=0, n_max=6),
               "speckle.poly_study": dict(n=65, standardise=False, block=0, n_max=6),
               "speckle.poly_area": dict(n=65, standardise=False, block=0, n_max=6),
               **{f"speckle.{k}_profile": dict(profile_bins=64, standardise=False, n_max=6) for k in ("mono", "poly", "poly_study", "poly_area")},
               "powder.bismuth": dict(shape=(48, 48), pixels_per_inv_angstrom=24.0),
               "kinematic.mote2": dict(grid=33), "kinematic.mote2_vae": dict(grid=33),
               "bloch.lacbed": dict(pixels=16, n_beams=15, max_atoms=12), "bloch.lacbed_icsd": dict(pixels=16, n_beams=15),
               "mote2.unseen_instrument": dict(mote2_config=dict(grid=33)),
               "mote2.randomised_instruments": dict(mote2_config=dict(grid=33)),
               "mote2.pump_probe": dict(grid=33, n_frames=4)}


@pytest.mark.parametrize("name", REAL_SAMPLERS or [pytest.param("none", marks=pytest.mark.skip("no real simulator sampler yet"))])
def test_real_simulator_end_to_end(tmp_path, name):
    sampler = get_sampler(name, **REAL_CONFIG.get(name, {}))
    a = generate(sampler, 6, tmp_path / "a.zarr", seed=11, chunk_size=3, scheduler="synchronous", progress=False)
    assert verify(a.path).ok and a.meta["sampler"]["name"] == name
    b = generate(sampler, 6, tmp_path / "b.zarr", seed=11, chunk_size=3, scheduler="synchronous", progress=False)
    assert tree(a.path) == tree(b.path)
    x = a.images[:]
    assert np.isfinite(x).all() and x.std() > 0
    # the store holds the simulator's own output for (seed, index): bitwise for the same batch (chunk 1 = samples
    # 3..5), and to float32 rounding for another batch composition (batched FFT/matmul sums may round differently)
    xs, ys, _ = sampler.sample(11, [3, 4, 5])
    np.testing.assert_array_equal(x[3:6], xs.numpy())
    xs, ys, _ = sampler.sample(11, [4, 1])
    np.testing.assert_allclose(x[[4, 1]], xs.numpy(), rtol=1e-5, atol=1e-6 * np.abs(x).max())
    if sampler.task == "classification":
        np.testing.assert_array_equal(a.targets[[4, 1]], ys.numpy())
        assert set(a.targets[:].tolist()) <= set(range(len(sampler.classes)))
    if name.endswith("_profile"):   # the log of a ring average of |A|², each at most I(0) = (total disk area)²
        assert np.all(x <= 2 * np.log(sampler.config["total_area"]) + 1e-5)
        np.testing.assert_array_equal(a.targets[:] + sampler.config["n_min"], a.param("n_disks"))
    elif name.startswith("speckle."):
        # physics: forward scattering is the maximum, I(0) = (total disk area)² ≥ I(k); label = n_disks − n_min
        c = sampler.image_shape[-1] // 2
        assert np.all(x[:, 0, c, c] >= x.reshape(6, -1).max(axis=1) * (1 - 1e-5))
        np.testing.assert_array_equal(a.targets[:] + sampler.config["n_min"], a.param("n_disks"))
    if name == "powder.bismuth":  # target is U_iso, stored next to B = 8π² U_iso (Willis & Pryor)
        np.testing.assert_allclose(a.targets[:], a.param("u_iso"), rtol=1e-6)
        np.testing.assert_allclose(a.param("b_iso"), 8 * np.pi**2 * a.param("u_iso"), rtol=1e-6)
    if sampler.task == "image2image":
        assert a.targets.shape == (6, *sampler.target_shape) and np.isfinite(a.targets[:]).all()
    dls = dataloaders(a, bs=2, valid_pct=0.34, device="cpu")
    xb = dls.one_batch()[0]
    assert xb.shape == (2, *sampler.image_shape) and xb.dtype == torch.float32


# ---------------------------------------------------------------- fault injection
KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from diffnb.data import SlitSampler, generate
    class Slow(SlitSampler):  # same name/version/config: only slower
        def sample(self, seed, indices):
            time.sleep(0.15)
            return super().sample(seed, indices)
    generate(Slow(image_size=16, task="regression"), 160, sys.argv[1], seed=5, chunk_size=8,
             scheduler="synchronous", progress=False)
""")


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    path = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)])
    done = path / "chunks_done" / "c"
    t0 = time.time()
    try:
        while not (done.exists() and len(list(done.iterdir())) >= 4):
            assert proc.poll() is None, "generation finished or failed before it could be killed"
            assert time.time() - t0 < 120, "generation did not start"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    st_ = open_store(path)
    assert 4 <= st_.n_complete < st_.n_chunks  # killed part-way
    rep = verify(path)
    assert not rep.ok and any("not complete" in p for p in rep.problems)
    assert verify_cli([str(path)]) == 1
    n_before = st_.n_complete
    sampler = SlitSampler(image_size=16, task="regression")
    resumed = generate(sampler, 160, path, seed=5, chunk_size=8, scheduler="synchronous", progress=False)
    assert resumed.complete and verify(path).ok and n_before < resumed.n_chunks
    ref = generate(sampler, 160, tmp_path / "ref.zarr", seed=5, chunk_size=8, scheduler="synchronous", progress=False)
    assert tree(path) == tree(ref.path)


def test_damaged_store_fails_verify_naming_the_chunk(tmp_path):
    s = small(tmp_path)  # 40 samples, chunks of 8 → 5 chunks
    root = Path(s.path)
    (root / "images" / "c" / "2" / "0" / "0" / "0").unlink()           # deleted shard
    shard = root / "targets" / "c" / "4"
    shard.write_bytes(shard.read_bytes()[:-7] + b"garbage")              # corrupted bytes
    rep = verify(s.path)
    assert any(p.startswith("chunk 2 (samples 16-23)") for p in rep.problems), rep.problems
    assert any(p.startswith("chunk 4 (samples 32-39)") for p in rep.problems), rep.problems
    assert not any(p.startswith(("chunk 0", "chunk 1", "chunk 3")) for p in rep.problems)
    assert verify_cli([str(s.path)]) == 1
    assert repair(s.path) == [2, 4]
    fixed = generate(SlitSampler(image_size=16), 40, s.path, seed=3, chunk_size=8, scheduler="synchronous", progress=False)
    assert verify(fixed.path).ok and tree(fixed.path) == tree(small(tmp_path, "ref.zarr").path)


def test_nan_and_missing_provenance_fail_verify(tmp_path):
    import zarr
    s = small(tmp_path)
    g = zarr.open_group(s.path, mode="r+")
    g["images"][9, 0, 3, 3] = np.nan
    rep = verify(s.path)
    assert any(p.startswith("chunk 1 (samples 8-15): NaN/Inf in images") for p in rep.problems), rep.problems
    attrs = dict(g.attrs)["diffnb"]; attrs.pop("seed"); g.attrs["diffnb"] = attrs
    assert any("missing 'seed'" in p for p in verify(s.path).problems)


# ---------------------------------------------------------------- Dask
def test_localcluster_two_workers_equals_in_process(tmp_path):
    from dask.distributed import LocalCluster
    a = small(tmp_path, "sync.zarr", n=48)
    t0 = time.time()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert len(cluster.workers) == 2
        # an existing scheduler, reached by its address (as `diffnb generate --scheduler tcp://...` does)
        b = generate(SlitSampler(image_size=16), 48, tmp_path / "dask.zarr", seed=3, chunk_size=8,
                     scheduler=cluster.scheduler_address, progress=False)
    c = generate(SlitSampler(image_size=16), 48, tmp_path / "threads.zarr", seed=3, chunk_size=8, scheduler="threads",
                 n_workers=2, progress=False)
    assert time.time() - t0 < 60
    assert verify(b.path).ok and tree(a.path) == tree(b.path) == tree(c.path)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_and_write_nothing(tmp_path):
    s = SlitSampler(image_size=16)
    blocker = tmp_path / "a_file"; blocker.write_text("x")
    with pytest.raises(DiffnbValueError, match="path must be a writable location"):
        generate(s, 8, blocker / "sub" / "x.zarr", scheduler="synchronous")
    with pytest.raises(DiffnbValueError, match="not an existing file"):
        generate(s, 8, blocker, scheduler="synchronous")
    for n in (0, -5):
        with pytest.raises(DiffnbValueError, match="n must be an integer >= 1"):
            generate(s, n, tmp_path / "n.zarr")
    with pytest.raises(DiffnbValueError, match="sampler must be one of the registered samplers"):
        generate("speckle.nonexistent", 8, tmp_path / "u.zarr")
    with pytest.raises(DiffnbValueError, match="scheduler must be"):
        generate(s, 8, tmp_path / "v.zarr", scheduler="gpu-cluster")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    # an existing store made with other parameters is refused and left untouched
    a = small(tmp_path, "a.zarr")
    before = tree(a.path)
    for kw, msg in [(dict(seed=9), "seed: 3 ≠ 9"), (dict(n=41), "n: 40 ≠ 41"), (dict(chunk_size=4), "chunk_size: 8 ≠ 4")]:
        args = dict(n=40, seed=3, chunk_size=8) | kw
        with pytest.raises(DiffnbValueError, match=msg):
            generate(s, args["n"], a.path, seed=args["seed"], chunk_size=args["chunk_size"], scheduler="synchronous")
    with pytest.raises(DiffnbValueError, match="sampler.config"):
        generate(SlitSampler(image_size=16, dose=10.0), 40, a.path, seed=3, chunk_size=8, scheduler="synchronous")
    assert tree(a.path) == before
    b = generate(s, 40, a.path, seed=9, chunk_size=8, scheduler="synchronous", overwrite=True, progress=False)
    assert b.meta["seed"] == 9 and verify(b.path).ok
    other = tmp_path / "other"; other.mkdir(); (other / "keep.txt").write_text("data")
    with pytest.raises(DiffnbValueError, match="is not one"):
        generate(s, 8, other, scheduler="synchronous")
    assert (other / "keep.txt").read_text() == "data"
    with pytest.raises(DiffnbFileNotFoundError):
        open_store(tmp_path / "missing.zarr")
    # a sampler that breaks the protocol is rejected before anything is written
    class Bad(SlitSampler):
        def sample(self, seed, indices):
            x, y, p = super().sample(seed, indices)
            return x[:, :, :8], y, p
    with pytest.raises(DiffnbValueError, match="sampler images must be of shape"):
        generate(Bad(image_size=16), 8, tmp_path / "bad.zarr", scheduler="synchronous")
    assert not (tmp_path / "bad.zarr").exists()


def test_registry():
    assert isinstance(get_sampler("toy.slits"), Sampler)
    register_sampler("toy.small", SlitSampler, {"image_size": 8})
    try:
        assert get_sampler("toy.small").image_shape == (1, 8, 8)
        assert get_sampler("toy.small", image_size=12).image_shape == (1, 12, 12)
    finally:
        SAMPLERS.pop("toy.small")
    register_sampler("toy.missing", "diffnb.sim.does_not_exist:X")
    try:
        with pytest.raises(DiffnbValueError, match="registered but not available"):
            get_sampler("toy.missing")
        assert "toy.missing" not in available_samplers()
    finally:
        SAMPLERS.pop("toy.missing")


# ---------------------------------------------------------------- splits
@settings(max_examples=40, deadline=None)
@given(groups=st.lists(st.integers(0, 12), min_size=6, max_size=80), k=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_grouped_kfold_no_group_in_two_folds(groups, k, seed):
    groups = np.array(groups)
    if len(np.unique(groups)) < k:
        with pytest.raises(DiffnbValueError, match="distinct groups"):
            make_split(len(groups), "grouped", k=k, by=groups, seed=seed)
        return
    f = make_split(len(groups), "grouped", k=k, by=groups, seed=seed)
    for g in np.unique(groups):
        assert len(np.unique(f[groups == g])) == 1
    valid = np.concatenate([fold_indices(f, i)[1] for i in range(k)])
    np.testing.assert_array_equal(np.sort(valid), np.arange(len(groups)))  # every sample is tested exactly once
    assert set(f.tolist()) == set(range(k))  # no empty fold
    two = make_split(len(groups), "grouped", by=groups, valid_pct=0.3, seed=seed)
    tr, va = fold_indices(two)
    assert len(va) and len(tr) and not set(groups[tr]) & set(groups[va])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 300), k=st.integers(2, 10), seed=st.integers(0, 1000))
def test_random_kfold_covers_every_sample_once(n, k, seed):
    k = min(k, n)
    f = make_split(n, "random", k=k, seed=seed)
    valid = np.concatenate([fold_indices(f, i)[1] for i in range(k)])
    np.testing.assert_array_equal(np.sort(valid), np.arange(n))
    assert np.ptp(np.bincount(f, minlength=k)) <= 1


def test_stratified_and_saved_splits(tmp_path):
    s = small(tmp_path, n=80)
    y = s.targets[:]
    f = make_split(s, "stratified", valid_pct=0.25, seed=1, save="strat")
    for c in np.unique(y):
        assert abs((f[y == c] == 1).mean() - 0.25) <= 0.5 / (y == c).sum() + 1e-9
    np.testing.assert_array_equal(open_store(s.path).load_split("strat"), f)
    info = open_store(s.path).split_info("strat")
    assert info["method"] == "stratified" and info["seed"] == 1
    assert not np.array_equal(make_split(80, "random", seed=1), make_split(80, "random", seed=2))
    np.testing.assert_array_equal(make_split(80, "random", seed=1), make_split(80, "random", seed=1))
    with pytest.raises(DiffnbValueError, match="valid_pct"):
        make_split(80, "random", valid_pct=1.5)
    with pytest.raises(DiffnbValueError, match="method must be one of"):
        make_split(80, "by-eye")


# ---------------------------------------------------------------- fastai
@pytest.mark.parametrize("task", ["classification", "regression", "image2image", "unlabelled"])
def test_dataloaders_from_store_and_on_the_fly(tmp_path, task):
    s = small(tmp_path, task=task, n=24)
    for dls in (dataloaders(s, bs=4, device="cpu", batch_tfms=[LogIntensity()]),
                dataloaders(SlitSampler(image_size=16, task=task), bs=4, n_train=8, n_valid=4, device="cpu")):
        b = dls.one_batch()
        assert b[0].shape == (4, 1, 16, 16) and b[0].dtype == torch.float32 and b[0].device.type == "cpu"
        assert isinstance(b[0], FloatImage)
        if task == "unlabelled": assert len(b) == 1
        elif task == "classification": assert b[1].shape == (4,) and b[1].dtype == torch.int64 and dls.c == 4
        elif task == "regression": assert b[1].shape == (4, 1) and b[1].dtype == torch.float32
        else: assert b[1].shape == (4, 1, 16, 16) and b[1].dtype == torch.float32


def test_store_batches_match_store_and_log_transform_decodes(tmp_path):
    s = small(tmp_path, n=24)
    dls = dataloaders(s, bs=5, device="cpu", batch_tfms=[LogIntensity()], seed=2)
    xb, yb = next(iter(dls.valid))
    _, va = fold_indices(make_split(s, "random", valid_pct=0.2, seed=2))
    raw = s.images[:][va[:5]]
    np.testing.assert_allclose(xb.numpy(), np.log(raw + 1), rtol=1e-6)
    np.testing.assert_allclose(dls.valid.decode((xb, yb))[0].numpy(), raw, rtol=1e-4, atol=1e-3)
    assert dls.intensity_transforms == [{"name": "LogIntensity", "offset": 1.0}]


def test_show_batch_float_images_not_saturated(tmp_path):
    s = small(tmp_path, n=24, task="image2image")
    dls = dataloaders(s, bs=4, device="cpu")
    xb, yb = dls.one_batch()
    assert xb.max() > 10  # physical counts: a [0, 1] display range would saturate
    plt.close("all")
    dls.show_batch(b=(xb, yb), max_n=4)
    ims = [im for ax in plt.gcf().axes for im in ax.get_images()]
    assert len(ims) == 8  # input and target of 4 samples
    for im, ref in zip(ims[0::2], xb[:4, 0]):
        lo, hi = im.get_clim()
        assert lo <= float(ref.min()) + 1e-6 and hi >= float(ref.max()) - 1e-6
        np.testing.assert_array_equal(np.asarray(im.get_array()), ref.numpy())  # no clipping, no 8-bit
    plt.close("all")


def test_show_results_regression(tmp_path):
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    s = small(tmp_path, n=24, task="regression")
    dls = dataloaders(s, bs=4, device="cpu", batch_tfms=[PercentileNormalize()])
    learn = Learner(dls, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 1)), loss_func=MSELossFlat())
    plt.close("all")
    learn.show_results(max_n=2)
    assert len(plt.get_fignums()) == 1  # one grid, not a figure per sample
    titles = [ax.get_title() for ax in plt.gcf().axes]
    assert len(titles) == 2 and all("\n" in t for t in titles), titles  # target and prediction on each panel
    plt.close("all")


def test_show_results_image2image(tmp_path):
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    s = small(tmp_path, n=24, task="image2image")
    dls = dataloaders(s, bs=4, device="cpu", batch_tfms=[SqrtIntensity()])
    learn = Learner(dls, torch.nn.Conv2d(1, 1, 3, padding=1), loss_func=MSELossFlat())
    plt.close("all")
    learn.show_results(max_n=2)
    assert len(plt.get_fignums()) == 1 and sum(len(ax.get_images()) for ax in plt.gcf().axes) == 6
    plt.close("all")


def test_multiworker_loading_matches_single_process(tmp_path):
    s = small(tmp_path, n=32)
    one = dataloaders(s, bs=4, device="cpu", num_workers=0)
    two = dataloaders(s, bs=4, device="cpu", num_workers=2)
    a = torch.cat([b[0] for b in one.valid]); b = torch.cat([b[0] for b in two.valid])
    assert torch.equal(a, b)
    # chunk-grouped shuffling is a permutation of the training set, different every epoch
    i1, i2 = list(one.train.get_idxs()), list(one.train.get_idxs())
    assert sorted(i1) == list(range(len(one.train.dataset))) and i1 != i2 and i1 != sorted(i1)
    seen = torch.cat([b[0] for b in two.train.new(drop_last=False)])
    ref = torch.from_numpy(s.images[:][one.train.dataset.indices])
    assert sorted(map(float, seen.sum(dim=(1, 2, 3)))) == sorted(map(float, ref.sum(dim=(1, 2, 3))))


def test_on_the_fly_fresh_training_fixed_validation():
    sampler = SlitSampler(image_size=16, task="classification")
    dls = dataloaders(sampler, bs=4, n_train=8, n_valid=8, seed=7, device="cpu", batch_tfms=[SqrtIntensity()])
    e1 = torch.cat([b[0] for b in dls.train]); e2 = torch.cat([b[0] for b in dls.train])
    assert not torch.equal(e1, e2)
    v1 = torch.cat([b[0] for b in dls.valid]); v2 = torch.cat([b[0] for b in dls.valid])
    assert torch.equal(v1, v2)
    ref = sampler.sample(7, range(8))[0]
    np.testing.assert_allclose(v1.numpy(), ref.sqrt().numpy(), rtol=1e-6)
    with pytest.raises(DiffnbValueError, match="split must be None"):
        dataloaders(sampler, split="random")


# ---------------------------------------------------------------- CLI
def test_cli(tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    assert generate_cli(["toy.slits", "--n", "16", "--out", str(out), "--seed", "3", "--chunk-size", "8",
                         "--scheduler", "synchronous", "--no-progress", "-p", "image_size=16"]) == 0
    assert tree(out) == tree(small(tmp_path, "ref.zarr", n=16).path)
    assert verify_cli([str(out)]) == 0
    assert "2/2 chunks complete" in capsys.readouterr().out
    assert generate_cli(["no.such", "--n", "4", "--out", str(tmp_path / "x.zarr")]) == 2
    assert "sampler must be one of" in capsys.readouterr().err
    assert generate_cli(["toy.slits", "--n", "0", "--out", str(tmp_path / "x.zarr")]) == 2
    assert verify_cli([str(tmp_path / "x.zarr")]) == 2
    assert not (tmp_path / "x.zarr").exists()


def test_fsspec_url_store():
    url = f"memory://diffnb-test-{os.getpid()}/m.zarr"
    s = generate(SlitSampler(image_size=16), 20, url, seed=3, chunk_size=8, scheduler="synchronous", progress=False)
    assert s.complete and verify(url).ok
    np.testing.assert_array_equal(open_store(url).images[:], SlitSampler(image_size=16).sample(3, range(20))[0].numpy())
    with pytest.raises(DiffnbValueError, match="seed: 3 ≠ 4"):
        generate(SlitSampler(image_size=16), 20, url, seed=4, chunk_size=8, scheduler="synchronous")
    assert dataloaders(url, bs=4, device="cpu").one_batch()[0].shape == (4, 1, 16, 16)
