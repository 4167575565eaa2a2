"""`diffnb explore model|latent` on every model that a `diffnb run` of each workflow saves (the session's shared tiny runs).

Each explorer is built in-process as the app's kernel builds it, and what it shows is checked against a direct
`predict` of the same saved model on the same input; the browser side is covered by tests/test_explore.py.
"""
import numpy as np
import pytest

from test_workflow_bismuth import SMALL as BISMUTH_SMALL
from test_workflows import SPECKLE

# the arguments of the runs the workflow tests make, so that a session runs each workflow once
RUNS = {"speckle": SPECKLE, "lacbed": (), "mote2": ("-p", "seed", "1", "-p", "epochs", "3"),
        "bismuth": ("-p", "dr_arch", "radial", "-p", "dr_loss", "mse", *BISMUTH_SMALL)}


def _open(model_dir, **kw):
    from diffnb.explore_models import latent_explorer, model_explorer
    from diffnb.learn.io import read_model_meta
    return latent_explorer(model_dir) if read_model_meta(model_dir)["task"] == "vae" else model_explorer(model_dir, device="cpu", **kw)


@pytest.mark.parametrize("workflow", sorted(RUNS))
def test_every_saved_model_opens_in_the_explorer(workflow_run, workflow):
    from diffnb.explore_models import _sampler_spec
    from diffnb.learn.io import load_model, predict, read_model_meta
    import matplotlib
    matplotlib.use("Agg")
    out, m = workflow_run(workflow, *RUNS[workflow])
    assert m["models"], f"the {workflow} run saved no model"
    for name, rel in m["models"].items():
        d = out / rel
        kw = {}
        if workflow == "bismuth" and name == "gan_generator":   # lab → ideal: the run's ring sampler in pair mode
            sampler, config = _sampler_spec(read_model_meta(out / m["models"]["ccnn"]))
            assert sampler == "powder.bismuth"
            kw = dict(sampler=sampler, **{**config, "mode": "pair"})
        ex = _open(d, **kw)
        assert len(ex.image.value) > 1000, f"{workflow}/{name}: no figure"
        if ex.name != "model": continue
        direct = predict(load_model(d, device="cpu"), ex.data["image"][None], progress=False)   # what the explorer shows
        got = {"classification": "probabilities", "regression": "values", "image2image": "predicted"}[direct.task]
        want = direct.probabilities[0] if direct.task == "classification" else direct.values[0]
        np.testing.assert_allclose(ex.data[got], want, rtol=1e-4, atol=1e-5, err_msg=f"{workflow}/{name}")
