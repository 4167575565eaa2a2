"A sampler's recorded `config` must rebuild the same sampler: `repair`, `diffnb run` caches and model explorers depend on it."
import numpy as np
import pytest

from diffnb.data.store import SAMPLERS, available_samplers, get_sampler

SMALL = {  # cheap constructor arguments per sampler (the defaults of some build large grids)
    "speckle.mono": dict(n=16), "speckle.poly": dict(n=16), "powder.bismuth": dict(shape=(32, 32)),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_config_rebuilds_the_sampler(name):
    if name not in available_samplers(): pytest.skip(f"{name} not importable here")
    s = get_sampler(name, **SMALL.get(name, {}))
    again = get_sampler(name, **s.config)  # every key of config must be a constructor argument
    assert again.config == s.config and again.version == s.version
    (x1, y1, _), (x2, y2, _) = s.sample(3, [0, 1]), again.sample(3, [0, 1])
    assert np.array_equal(np.asarray(x1), np.asarray(x2)) and np.array_equal(np.asarray(y1), np.asarray(y2))
