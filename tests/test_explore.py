"""`diffnb explore`: the explorers served by Voilà and driven in headless Chromium.

The browser test starts three explorer servers (two simulators and `diffnb explore model` on a tiny saved
classifier), moves a slider with the keyboard and checks that the displayed figure changed and that the page
logged no JavaScript error. It skips when Debian's chromium/chromedriver are
absent, except in CI (CI=true), where `.ci/run` installs them.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _cli(*args, **kw):
    return [sys.executable, "-c", "import sys; from diffnb.cli import main; sys.exit(main())", *args]


def test_explore_list_and_unknown_name(capsys):
    from diffnb.cli import main
    assert main(["explore", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("powder", "lacbed", "mote2", "speckle", "detector"): assert name in out
    assert main(["explore", "nonexistent", "--no-browser"]) == 2
    assert "unknown explorer" in capsys.readouterr().err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _have_browser():
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def _tiny_classifier(folder):
    "An untrained speckle classifier (33×33 input) saved with its sampler's provenance, for `diffnb explore model`."
    import torch
    from diffnb.data import get_sampler
    from diffnb.learn.io import save_model
    from diffnb.learn.models import conversion_cnn
    s = get_sampler("speckle.mono", n=33, n_max=8)
    torch.manual_seed(0)
    net = conversion_cnn(n_in=1, n_out=len(s.classes), img_size=(33, 33), channels=(4,), hidden=(8,), p_drop=0.2)
    return save_model(net, folder / "clf", task="classification", classes=s.classes, input_shape=(1, 33, 33),
                      provenance={"sampler": s.name, "config": s.config})


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    "Three explorer servers started with `diffnb explore NAME [--model DIR] --port P --no-browser` (in parallel)."
    if not _have_browser():
        if IN_CI: pytest.fail("chromium/chromedriver missing in CI: .ci/run must install them")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    model = _tiny_classifier(tmp_path_factory.mktemp("explore_model"))
    procs = {}
    try:
        for name, extra in (("speckle", []), ("powder", []), ("model", ["--model", str(model)])):
            port = _free_port()
            p = subprocess.Popen(_cli("explore", name, *extra, "--port", str(port), "--no-browser"), env=env, cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            procs[name] = (p, port)
        for name, (p, port) in procs.items():
            line = p.stdout.readline()                      # the command prints its address first
            assert f"http://127.0.0.1:{port}/" in line, line
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/api/shutdown", timeout=1)
                except urllib.error.HTTPError: break         # the server answers (any status)
                except OSError: time.sleep(0.25)
            else: pytest.fail(f"voila for {name} did not start")
        yield {name: f"http://127.0.0.1:{port}/" for name, (p, port) in procs.items()}
    finally:
        for p, _ in procs.values():
            if p.poll() is None: os.killpg(p.pid, signal.SIGTERM)   # our own process group only
        for p, _ in procs.values():
            try: p.wait(timeout=5)
            except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser(servers):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1000",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
    yield d
    d.quit()


_BYTES = """const done = arguments[arguments.length - 1];
fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {
  const a = new Uint8Array(b); let h = 0;
  for (let i = 0; i < a.length; i++) h = (h * 31 + a[i]) >>> 0;
  done([a.length, h]); }).catch(e => done(String(e)));"""


def _errors(log, url):
    "JavaScript errors, and failed requests to the local server (requests to other hosts fail offline by design)."
    out = []
    for e in log:
        if e["level"] != "SEVERE": continue
        if e.get("source") == "network" and not e["message"].startswith(url): continue
        out.append(e["message"])
    return out


@pytest.mark.parametrize("name", ["speckle", "powder", "model"])
def test_slider_changes_the_figure(servers, browser, name):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    url = servers[name]
    browser.get(url)
    t0 = time.time()
    img = None
    while time.time() - t0 < 60:
        imgs = browser.find_elements(By.CSS_SELECTOR, "img.widget-image, .widget-image img, .jupyter-widgets img")
        if imgs and (imgs[0].get_attribute("src") or "").startswith("blob:"): img = imgs[0]; break
        time.sleep(0.25)
    assert img is not None, f"{name}: no figure on the page after 60 s"
    src0 = img.get_attribute("src")
    bytes0 = browser.execute_async_script(_BYTES, src0)
    assert isinstance(bytes0, list) and bytes0[0] > 1000, bytes0      # a real PNG
    handle = browser.find_elements(By.CSS_SELECTOR, ".noUi-handle")[0]   # first slider (N disks / temperature / draw)
    handle.click()
    for _ in range(3): handle.send_keys(Keys.ARROW_RIGHT)
    t1 = time.time()
    while time.time() - t1 < 30 and img.get_attribute("src") == src0: time.sleep(0.2)
    src1 = img.get_attribute("src")
    assert src1 != src0, f"{name}: the figure did not change after moving the slider"
    time.sleep(1.0)                                                  # the last of the key presses
    bytes1 = browser.execute_async_script(_BYTES, img.get_attribute("src"))
    assert bytes1 != bytes0, f"{name}: same image bytes after moving the slider"
    errs = _errors(browser.get_log("browser"), url)
    assert not errs, f"{name}: JavaScript errors on the page: {errs}"
