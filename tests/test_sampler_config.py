"A sampler's recorded `config` must rebuild the same sampler: `repair`, `diffnb run` caches and model explorers depend on it."
import numpy as np
import pytest

from diffnb.data.store import SAMPLERS, available_samplers, get_sampler

SMALL = {  # cheap constructor arguments per sampler (the defaults of some build large grids)
    "speckle.mono": dict(n=16), "speckle.poly": dict(n=16), "speckle.poly_study": dict(n=16), "speckle.poly_area": dict(n=16),
    "powder.bismuth": dict(shape=(32, 32)), "bloch.lacbed_icsd": dict(pixels=16, n_beams=15),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_config_rebuilds_the_sampler(name):
    if name not in available_samplers(): pytest.skip(f"{name} not importable here")
    s = get_sampler(name, **SMALL.get(name, {}))
    again = get_sampler(name, **s.config)  # every key of config must be a constructor argument
    assert again.config == s.config and again.version == s.version
    (x1, y1, _), (x2, y2, _) = s.sample(3, [0, 1]), again.sample(3, [0, 1])
    assert np.array_equal(np.asarray(x1), np.asarray(x2)) and np.array_equal(np.asarray(y1), np.asarray(y2))


def test_study_protocol_round_trips_through_the_store(tmp_path):
    from diffnb.data.store import generate, open_store, verify
    s = get_sampler("speckle.poly_study", n=16, radii_seed=5, total_area=2 * np.pi * 90.0**2)
    generate(s, 8, tmp_path / "s.zarr", seed=1, chunk_size=4, scheduler="synchronous", progress=False)
    st = open_store(tmp_path / "s.zarr")
    meta = st.meta["sampler"]
    assert meta["name"] == "speckle.poly_study"
    assert meta["config"]["radii_seed"] == 5 and meta["config"]["total_area"] == 2 * np.pi * 90.0**2
    again = get_sampler(meta["name"], **meta["config"])  # what `repair` does
    assert again.class_radii.keys() == s.class_radii.keys()
    assert all(np.array_equal(again.class_radii[k], s.class_radii[k]) for k in s.class_radii)
    assert np.array_equal(np.asarray(again.sample(1, range(8))[0]), st.images[:]) and verify(tmp_path / "s.zarr").ok


def test_icsd_lacbed_round_trips_through_the_store(tmp_path):
    """bloch.lacbed_icsd: the recorded name and config rebuild the sampler; the store holds the reduced formula (to group
    a split by), prototype and variant flag of every sample, ICSD entries first, then substitution variants."""
    from diffnb.data.store import generate, open_store, verify
    from diffnb.sim.bloch import icsd_crystal
    from diffnb.structure import icsd_prototypes
    n = len(icsd_prototypes())
    s = get_sampler("bloch.lacbed_icsd", pixels=8, n_beams=9)
    assert s.config["crystals"] == "icsd"
    generate(s, 3, tmp_path / "s.zarr", seed=2, chunk_size=3, scheduler="synchronous", progress=False)
    st = open_store(tmp_path / "s.zarr")
    meta = st.meta["sampler"]
    assert meta["name"] == "bloch.lacbed_icsd" and meta["config"]["crystals"] == "icsd"
    again = get_sampler(meta["name"], **meta["config"])  # what `repair` does
    assert again.config == s.config and verify(tmp_path / "s.zarr").ok
    assert list(st.param("formula")) == [icsd_crystal(2, i).info["formula"] for i in range(3)]
    assert list(st.param("prototype")) == [icsd_crystal(2, i).info["prototype"] for i in range(3)]
    x, y, p = again.sample(2, [n + 5])                      # past the entries: a variant, reproducible
    assert bool(p["variant"][0]) and p["formula"][0] == icsd_crystal(2, n + 5).info["formula"]
    assert np.array_equal(np.asarray(x), np.asarray(s.sample(2, [n + 5])[0]))
