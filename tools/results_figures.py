"""Figures of the recorded CPU-scale runs, shown on the workflow pages and the Results page.

Two sources, both written to nbs/workflows/results/<workflow>/*.png (small PNGs, committed beside the results JSON):

- the results JSON in nbs/workflows/results/ (every number of the recorded runs): summary figures are drawn from them,
  so they can be refreshed whenever a JSON changes:
      python tools/results_figures.py                      # every workflow
      python tools/results_figures.py bismuth lacbed       # some
- a recorded run's own folder (what `diffnb run` wrote): its figures, copied at most 1,100 px wide with a palette:
      python tools/results_figures.py --from-run speckle runs/study/seed0 --prefix seed0_

`--check` draws nothing and exits 1 when a figure drawn from the JSON is missing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "nbs" / "workflows" / "results"
DPI = 100
MAX_WIDTH_PX = 1100
COLORS = {"model": "#1f5a8a", "other": "#b5651d", "baseline": "#8c8c8c", "extra": "#4d9a5b", "study": "#c0392b"}


def _load(name: str) -> dict:
    path = RESULTS / name
    if not path.is_file(): raise SystemExit(f"results_figures: {path} not found")
    return json.loads(path.read_text())


def _values(summary: dict, key: str, scale: float = 1.0) -> np.ndarray:
    "The per-seed values of `key` in a results JSON's summary (× scale)."
    if key not in summary: raise SystemExit(f"results_figures: no {key!r} in the summary")
    return scale * np.asarray(summary[key]["values"], dtype=float)


def _bars(ax, groups: list, series: list, colors: list, labels: list, width: float = 0.8, fmt: str = "{:.1f}"):
    "Grouped bars: mean with ± std whiskers and each seed as a dot; `series[j][i]` holds the seeds of bar j in group i."
    n = len(series)
    x = np.arange(len(groups))
    w = width / n
    for j, (vals, c, lab) in enumerate(zip(series, colors, labels)):
        xs = x - width / 2 + w * (j + 0.5)
        means = np.array([v.mean() for v in vals]); stds = np.array([v.std() for v in vals])
        ax.bar(xs, means, w * 0.92, color=c, label=lab, yerr=stds, capsize=2, error_kw={"lw": 0.8})
        for xi, v in zip(xs, vals):
            ax.plot(np.full(len(v), xi) + np.linspace(-w * 0.2, w * 0.2, len(v)), v, "o", ms=2.5, color="k", alpha=0.7)
        for xi, m, v, sd in zip(xs, means, vals, stds):   # the mean's value above its whiskers and dots
            ax.annotate(fmt.format(m), (xi, max(m + sd, v.max())), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, groups)


def _save(fig, workflow: str, name: str) -> Path:
    out = RESULTS / workflow / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, metadata={"Software": None})   # no version stamp: unchanged numbers give unchanged files
    _shrink(out)
    print(f"results_figures: wrote {out.relative_to(ROOT)} ({out.stat().st_size // 1024} KiB)")
    return out


def _shrink(path: Path, src: Path | None = None) -> None:
    "Save `src` (default: `path` itself) at most MAX_WIDTH_PX wide, as an RGB palette PNG."
    from PIL import Image
    im = Image.open(src or path)
    if im.mode in ("RGBA", "LA", "P"):
        bg = Image.new("RGB", im.size, "white")
        bg.paste(im.convert("RGBA"), mask=im.convert("RGBA").split()[-1]); im = bg
    im = im.convert("RGB")
    if im.width > MAX_WIDTH_PX: im = im.resize((MAX_WIDTH_PX, round(im.height * MAX_WIDTH_PX / im.width)), Image.LANCZOS)
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def _figure(*args, **kw):
    from matplotlib.figure import Figure
    return Figure(*args, layout="constrained", **kw)


# ---------------------------------------------------------------------------------------------------------- bismuth
BI_METHODS = (("cnn_only", "CCNN alone", COLORS["other"]), ("gan_cnn", "GAN-CNN", COLORS["extra"]),
              ("domain_randomised", "domain-randomised regressor", COLORS["model"]), ("analytic", "analytic (Eq. 1)", COLORS["baseline"]))
BI_SPLITS = (("cv.{m}", "5-fold CV,\ngrouped by experiment"), ("split.low_fluence.{m}", "lowest fluences\nheld out"),
             ("split.uiso_band.{m}", "U_iso band\nheld out"))


def bismuth() -> list:
    rel, r128 = _load("bismuth_relative.json"), _load("bismuth_radial128.json")
    key = lambda split, m: split.format(m=m) + ".mean_rel_error"
    fig = _figure(figsize=(11, 4.2))
    a, b = fig.subplots(1, 2, width_ratios=[1.5, 1])
    _bars(a, [s[1] for s in BI_SPLITS], [[_values(rel["summary"], key(s, m), 100) for s, _ in BI_SPLITS] for m, _, _ in BI_METHODS],
          [c for *_, c in BI_METHODS], [l for _, l, _ in BI_METHODS], fmt="{:.0f}")
    a.set_yscale("log"); a.set_ylim(1, 1000)
    a.axhline(9.23, color=COLORS["study"], ls="--", lw=1, label="Daoud et al., GAN-CNN 5-fold CV (9.23 %)")
    a.set_ylabel("mean |T_pred − T_true| / T_true [%]")
    a.set_title(f"64² px, {rel['n_runs']} seeds: every method", fontsize=10)
    a.legend(fontsize=7, loc="upper left", ncol=2)
    m = "domain_randomised"
    _bars(b, [s[1] for s in BI_SPLITS], [[_values(rel["summary"], key(s, m), 100) for s, _ in BI_SPLITS],
                                          [_values(r128["summary"], key(s, m), 100) for s, _ in BI_SPLITS]],
          [COLORS["model"], COLORS["extra"]], ["64² px, CCNN architecture", "128² px, radial regressor"])
    b.axhline(9.23, color=COLORS["study"], ls="--", lw=1, label="Daoud et al., 5-fold CV (9.23 %)")
    b.axhline(5.72, color=COLORS["study"], ls=":", lw=1, label="Daoud et al., validation (5.72 %)")
    b.set_ylim(0, 12); b.set_title(f"domain-randomised regressor, {r128['n_runs']} seeds each", fontsize=10)
    b.legend(fontsize=7, loc="upper left")
    for ax in (a, b): ax.tick_params(labelsize=8)
    fig.suptitle("Bi temperature from simulated lab frames: held-out error per method and split (bars: mean ± std; dots: seeds)",
                 fontsize=10)
    out = [_save(fig, "bismuth", "summary")]
    fig = _figure(figsize=(7.5, 3.2))
    ax = fig.subplots()
    folds = sorted({k.split(".")[1] for k in r128["summary"] if k.startswith("cv.fold")})
    _bars(ax, [f.replace("fold", "fold ") for f in folds],
          [[_values(d["summary"], f"cv.{f}.domain_randomised.mean_rel_error", 100) for f in folds] for d in (rel, r128)],
          [COLORS["model"], COLORS["extra"]], ["64² px, CCNN architecture", "128² px, radial regressor"])
    ax.axhline(9.23, color=COLORS["study"], ls="--", lw=1, label="Daoud et al., 5-fold CV (9.23 %)")
    ax.set_ylabel("error [%]"); ax.set_ylim(0, 12); ax.legend(fontsize=7, ncol=3, loc="upper left")
    ax.set_title("domain-randomised regressor: each held-out fold of experiments (dots: seeds)", fontsize=10)
    out.append(_save(fig, "bismuth", "cv_folds"))
    return out


# ----------------------------------------------------------------------------------------------------------- lacbed
def lacbed() -> list:
    d = _load("lacbed.json")
    study = d["study"]
    fig = _figure(figsize=(11, 3.8))
    a, b, c = fig.subplots(1, 3)
    for (name, run), color in zip(d["runs"].items(), (COLORS["other"], COLORS["model"])):
        lc = run["learning_curve"]
        epochs = run["command"].split("pretrain_epochs ")[1].split()[0] + "+" + run["command"].split("-p epochs ")[1].split()[0]
        lab = f"run {name} ({epochs} epochs)"
        a.plot(lc["n_train"], lc["forward_r_mean"], "o-", color=color, label=lab)
        b.plot(lc["n_train"], lc["inverse_shift_mse"], "o-", color=color, label=lab)
        t = sorted((int(k.rsplit(".t", 1)[1]), v) for k, v in run["metrics"].items() if k.startswith("test.forward.r_mean.t"))
        c.plot([x for x, _ in t], [v for _, v in t], "o-", color=color, label=lab)
    n_study = study["n_crystals"]
    a.plot([n_study], [study["forward_r_mean"]], "*", ms=12, color=COLORS["study"], label=f"Webb et al. ({n_study:,} crystals, 128² px)")
    b.plot([n_study], [study["inverse_mse"]], "*", ms=12, color=COLORS["study"], label="Webb et al.")
    a.set(xscale="log", xlabel="training crystals", ylabel="forward mean Pearson R (test)", ylim=(0, 1.02))
    b.set(xscale="log", yscale="log", xlabel="training crystals", ylabel="inverse MSE (test, min–max scaled)")
    c.set(xlabel="thickness [Å]", ylabel="forward mean R (test)", xscale="log", ylim=(0, 0.3))
    c.set_xticks([x for x, _ in t], [str(x) for x, _ in t]); c.minorticks_off()
    a.set_title("forward: potential → pattern", fontsize=10); b.set_title("inverse: pattern → potential", fontsize=10)
    c.set_title("forward R by thickness (all training crystals)", fontsize=10)
    for ax in (a, b, c): ax.legend(fontsize=7); ax.tick_params(labelsize=8)
    fig.suptitle("LACBED pix2pixHD at CPU scale (32² px, ngf 16): learning curves against the study", fontsize=10)
    out = [_save(fig, "lacbed", "learning_curve")]
    fig = _figure(figsize=(7, 3.0))
    ax = fig.subplots()
    sp = d["runs"]["C"]["speed"]
    labels = [m.replace(", cpu)", ")").replace(" (cpu)", "") + f", {p}² px" for m, p in zip(sp["method"], sp["pixels"])]
    ax.barh(np.arange(len(labels)), sp["s_per_crystal"], color=[COLORS["model"] if "cGAN" in m else COLORS["baseline"] for m in sp["method"]])
    for i, v in enumerate(sp["s_per_crystal"]): ax.annotate(f"{1000 * v:.1f} ms", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
    ax.set(xscale="log", xlabel="seconds per crystal (4 thicknesses), one CPU core")
    ax.set_xlim(right=max(sp["s_per_crystal"]) * 8)
    fig.suptitle("LACBED: cGAN inference against the Bloch-wave solver (run C, one CPU core)", fontsize=10)
    out.append(_save(fig, "lacbed", "speed"))
    return out


# ------------------------------------------------------------------------------------------------------------ mote2
MOTE2_ROWS = (("test.wrn.accuracy", "7-class test accuracy", "model"),
              ("test.wrn.worst_class_recall", "worst class recall", "model"),
              ("transfer.unadapted.accuracy", "unseen instrument: unadapted", "other"),
              ("transfer.fine_tuned.accuracy", "… fine-tuned on 77 (lr/10)", "other"),
              ("transfer.head_refit.accuracy", "… read-out refitted", "other"),
              ("transfer.scratch.accuracy", "… from scratch on 77", "baseline"),
              ("randomised.test_accuracy", "randomised base: own held-out instruments", "extra"),
              ("transfer.randomised_unadapted.accuracy", "randomised base on the unseen instrument", "extra"),
              ("transfer.randomised_fine_tuned.accuracy", "… fine-tuned on 77 (lr/10)", "extra"))


def mote2() -> list:
    d = _load("mote2_refit.json")
    s = d["summary"]
    fig = _figure(figsize=(11, 4.4))
    a, b = fig.subplots(1, 2, width_ratios=[2.2, 1])
    y = np.arange(len(MOTE2_ROWS))[::-1]
    for yi, (k, lab, c) in zip(y, MOTE2_ROWS):
        v = _values(s, k, 100)
        a.barh(yi, v.mean(), xerr=v.std(), color=COLORS[c], capsize=2, error_kw={"lw": 0.8})
        a.plot(v, np.full(len(v), yi) + np.linspace(-0.15, 0.15, len(v)), "o", ms=2.5, color="k", alpha=0.7)
        a.annotate(f"{v.mean():.1f}", (max(v.mean() + v.std(), v.max()), yi), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7)
    a.axvline(98, color=COLORS["study"], ls="--", lw=1, label="Shaaban et al.: > 98 % (7 classes)")
    a.set_yticks(y, [lab for _, lab, _ in MOTE2_ROWS], fontsize=8)
    a.set(xlim=(0, 110), xlabel="held-out accuracy / recall [%]")
    a.set_title(f"WideResNet classifiers, {d['n_runs']} seeds (bars: mean ± std; dots: seeds)", fontsize=10)
    a.legend(fontsize=7, loc="lower right")
    keys = (("vae.steering.valid_auc", "AUC\n(validation)"), ("vae.steering.test_auc", "AUC\n(test)"),
            ("vae.steering.test_detection_rate", "detection\n(test)"), ("vae.steering.test_false_alarm_rate", "false alarm\n(test)"))
    _bars(b, [l for _, l in keys], [[_values(s, k) for k, _ in keys]], [COLORS["model"]], ["VAE steering score"], fmt="{:.2f}")
    b.set(ylim=(0, 1.1)); b.set_title("VAE: transformation vs damage", fontsize=10); b.tick_params(labelsize=8)
    b.legend(fontsize=7, loc="upper right")
    fig.suptitle("MoTe₂ at CPU scale (65² px, simulated): classification, transfer to an unseen instrument, steering", fontsize=10)
    return [_save(fig, "mote2", "summary")]


# ---------------------------------------------------------------------------------------------------------- speckle
def speckle() -> list:
    runs = (("speckle_study_protocol.json", "the study's protocol: 64² px, 19,000 patterns"),
            ("speckle_radial.json", "radii drawn per disk: 257² px, 16,000 patterns"))
    fig = _figure(figsize=(11, 3.9))
    axs = fig.subplots(1, len(runs))
    groups = (("mono", "accuracy", "mono: accuracy"), ("poly", "macro_f1", "poly: macro-F1"), ("poly", "within_1", "poly: within ±1 disk"))
    for ax, (name, title) in zip(axs, runs):
        d = _load(name)
        s = d["summary"]
        _bars(ax, [g[2] for g in groups], [[_values(s, f"test.{k}.{m}.{q}", 100) for k, q, _ in groups] for m in ("cnn", "first_moment")],
              [COLORS["model"], COLORS["baseline"]], ["radial model", "first moment"])
        ax.plot([-0.2, 0.2], [99.95] * 2, color=COLORS["study"], lw=2, label="Shen et al. (ResNet-50)")
        ax.plot([0.8, 1.2], [89] * 2, color=COLORS["study"], lw=2)
        ax.set(ylim=(0, 122), ylabel="held-out test [%]")
        ax.set_title(f"{title}, {d['n_runs']} seeds", fontsize=10)
        ax.legend(fontsize=7, loc="upper center", ncol=3); ax.tick_params(labelsize=8)
    fig.suptitle("Speckle disk counting (19 classes, simulated): radial model and first-moment baseline against the study "
                 "(bars: mean ± std; dots: seeds)", fontsize=10)
    return [_save(fig, "speckle", "summary")]


WORKFLOWS = {"bismuth": bismuth, "lacbed": lacbed, "mote2": mote2, "speckle": speckle}
DRAWN = {"bismuth": ("summary", "cv_folds"), "lacbed": ("learning_curve", "speed"), "mote2": ("summary",), "speckle": ("summary",)}


def from_run(workflow: str, run_dir: Path, prefix: str) -> list:
    "Copy the PNG figures of a recorded run's folder into results/<workflow>/, `prefix` + their name, shrunk."
    if workflow not in WORKFLOWS: raise SystemExit(f"results_figures: unknown workflow {workflow!r}; one of {sorted(WORKFLOWS)}")
    metrics = run_dir / "metrics.json"
    if not metrics.is_file(): raise SystemExit(f"results_figures: {run_dir} has no metrics.json: not a `diffnb run` folder")
    m = json.loads(metrics.read_text())
    if m.get("workflow") != workflow: raise SystemExit(f"results_figures: {run_dir} is a {m.get('workflow')!r} run, not {workflow!r}")
    out = []
    for name in m.get("figures", []):
        src = run_dir / name
        if not src.is_file(): continue
        dst = RESULTS / workflow / f"{prefix}{Path(name).stem}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        _shrink(dst, src)
        print(f"results_figures: wrote {dst.relative_to(ROOT)} ({dst.stat().st_size // 1024} KiB) from {src}")
        out.append(dst)
    if not out: raise SystemExit(f"results_figures: {run_dir} lists no figure that exists")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflows", nargs="*", help=f"workflows to draw (default: all of {', '.join(WORKFLOWS)})")
    ap.add_argument("--from-run", nargs=2, metavar=("WORKFLOW", "RUN_DIR"), help="copy a recorded run's figures instead")
    ap.add_argument("--prefix", default="run_", help="file-name prefix of the copied figures (default: run_)")
    ap.add_argument("--check", action="store_true", help="draw nothing; exit 1 when a figure drawn from the JSON is missing")
    a = ap.parse_args(argv)
    if a.from_run:
        from_run(a.from_run[0], Path(a.from_run[1]), a.prefix)
        return 0
    names = a.workflows or list(WORKFLOWS)
    bad = [w for w in names if w not in WORKFLOWS]
    if bad: ap.error(f"unknown workflow(s) {bad}; choose from {sorted(WORKFLOWS)}")
    if a.check:
        missing = [f"{w}/{n}.png" for w in names for n in DRAWN[w] if not (RESULTS / w / f"{n}.png").is_file()]
        if missing: print("results_figures: missing " + ", ".join(missing), file=sys.stderr)
        return 1 if missing else 0
    import matplotlib
    matplotlib.use("Agg")
    for w in names: WORKFLOWS[w]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
