"""Issue 14: the report's figures, built from a synthetic results tree with known numbers
(summaries, configs, metrics records and diagnostics written here, no training)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from dfkd_bench import diagnostics, figures
from dfkd_bench.report import load_summaries
from dfkd_bench.summary import RunSummary, run_label

TEACHER_TOP1 = 94.0
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_run(root: Path, method: str, seed: int, top1: float, train_s: float, *, preset: str | None = None,
             status: str = "completed", data_scale: int = 0, dataset: str = "cifar10",
             pair: str = "resnet20-resnet8", flops: float | None = None, epochs: int = 5,
             diagnostics: dict[str, np.ndarray] | None = None) -> Path:
    """A run directory as the harness leaves it: ``summary.json``, ``config.json`` and a
    ``metrics.jsonl`` whose top-1 climbs linearly to ``top1`` while the train time grows
    to ``train_s`` (split 3:1 between synthesis and distillation, plus evaluation), and
    ``diagnostics.npz`` when given. FLOPs default to 1e9 per train second."""
    teacher, student = pair.split("-")
    label = run_label(method, preset)
    name = f"{dataset}__{pair}__{label}__n{data_scale or 'default'}__s{seed}"
    run = root / name
    run.mkdir(parents=True)
    done = status == "completed"
    summary = RunSummary(
        status=status, reason="" if done else "killed", name=name, method=method, preset=preset, dataset=dataset,
        pair=pair, teacher=teacher, student=student, seed=seed, data_scale=data_scale, epochs=epochs,
        epochs_done=epochs if done else 2, steps_per_epoch=5, final_top1=top1, best_top1=top1,
        teacher_top1=TEACHER_TOP1, seconds={"synthesis": 0.75 * train_s, "distillation": 0.25 * train_s,
                                            "evaluation": 0.1 * epochs, "checkpoint": 0.0},
        costs={}, training_flops=int(flops if flops is not None else 1e9 * train_s), peak_memory_mb=100.0,
        device="cpu", started="t0", updated="t1")
    (run / "summary.json").write_text(json.dumps(summary.to_json()))
    config = {"method": method, "preset": preset, "dataset": dataset, "pair": pair, "teacher": teacher,
              "student": student, "seed": seed, "device": "cpu",
              "run": {"data_scale": data_scale, "epochs": epochs, "device": "cpu"}, "method_config": {}}
    (run / "config.json").write_text(json.dumps(config))
    records = []
    for e in range(epochs):
        share = (e + 1) / epochs
        records.append({"event": "epoch", "epoch": e, "top1": round(top1 * (0.4 + 0.6 * share), 3),
                        "seconds_synthesis": 0.75 * train_s * share, "seconds_distillation": 0.25 * train_s * share,
                        "seconds_evaluation": 0.1 * (e + 1), "seconds_checkpoint": 0.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if diagnostics is not None:
        np.savez_compressed(run / "diagnostics.npz", **diagnostics)
    return run


def pool_arrays(seed: int, channels: int = 3, size: int = 32, names=CLASS_NAMES) -> dict[str, np.ndarray]:
    """A teacher's view of a pool of 500 images (seed 0; 100 fewer each later seed, so a
    figure tells which seed it drew): classes skewed towards class 0, confidence mostly
    high, 64 sample images."""
    rng = np.random.default_rng(seed)
    n = 500 - 100 * seed
    classes = rng.choice(10, size=n, p=np.r_[0.28, np.full(9, 0.08)]).astype(np.int64)
    idx = np.linspace(0, n - 1, 64).round().astype(int)
    return {"classes": classes, "confidence": rng.beta(5, 1.5, size=n).astype(np.float32),
            "sample_images": rng.integers(0, 256, (64, channels, size, size), dtype=np.uint8),
            "sample_classes": classes[idx], "class_names": np.array(names, dtype=str)}


# cifar10: four data-free methods at their default data scale, two seeds each (train
# time +-2 s, top-1 +-0.5 around the numbers below), plus real-data KD and runs that must
# never count. Pareto front of the data-free methods (less time, more accuracy): ssdkd,
# fast-fast2, cmi; real-data KD would push cmi off it, were it counted as a contender.
DEFAULT_SCALE = {("ssdkd", None): (55.0, 50.0), ("fast", "fast2"): (60.0, 100.0), ("deepinv", None): (50.0, 200.0),
                 ("cmi", None): (65.0, 400.0), ("kd", None): (70.0, 300.0)}
# digits: train time = slope * scale + intercept (the seeds' +-1 s cancel in the fit).
SCALES = (100, 200, 400)
LINES = {"ssdkd": (0.5, 10.0), "kd": (0.1, 2.0)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for (method, preset), (top1, train_s) in DEFAULT_SCALE.items():
        for seed, sign in ((0, 1), (1, -1)):
            make_run(root, method, seed, top1 + 0.5 * sign, train_s + 2 * sign, preset=preset,
                     diagnostics=pool_arrays(seed) if method == "ssdkd" else None)
    make_run(root, "dafl", 0, 99.0, 1.0, status="failed")  # would beat everything, were it counted
    make_run(root, "zskt", 0, 98.0, 2.0, status="running")
    for method, (slope, intercept) in LINES.items():
        for scale in SCALES:
            for seed, sign in ((0, 1), (1, -1)):
                top1 = 80 + 10 * np.log10(scale / 100) + sign * 0.5 - (5 if method == "ssdkd" else 0)
                make_run(root, method, seed, top1, slope * scale + intercept + sign, data_scale=scale,
                         dataset="digits", pair="cnn_s-cnn_s",
                         diagnostics=pool_arrays(seed, 1, 8, names=[]) if (method, scale) == ("ssdkd", 100) else None)
    return root


@pytest.fixture(scope="module")
def df(tree) -> pd.DataFrame:
    frame, problems = load_summaries(tree)
    assert not problems
    return frame


@pytest.fixture(scope="module")
def written(df, tmp_path_factory) -> tuple[Path, list[figures.FigureInfo]]:
    out = tmp_path_factory.mktemp("figures")
    return out, figures.write_figures(df, out)


def by_stem(infos: list[figures.FigureInfo]) -> dict[str, figures.FigureInfo]:
    return {info.path_png.stem: info for info in infos}


def test_pareto_front_keeps_exactly_the_undominated_points():
    points = [("a", 1.0, 50.0), ("b", 2.0, 60.0), ("c", 3.0, 55.0), ("d", 2.0, 60.0), ("e", 2.0, 59.0),
              ("f", 0.5, 40.0)]
    # c: b is faster and better; e: b is as fast and better; b and d tie, neither beats the other
    assert figures.pareto_front(points) == ["f", "a", "b", "d"]


def test_a_point_at_scale_0_says_all_for_real_data_and_preset_otherwise():
    assert figures._scale_text(1250, real=True) == "1.25k"
    assert figures._scale_text(500, real=False) == "500"
    assert figures._scale_text(0, real=True) == "all"
    assert figures._scale_text(0, real=False) == "preset"


def test_fit_line_recovers_a_known_line():
    fit = figures.fit_line([100, 200, 400, 800], [60, 110, 210, 410])
    assert fit.slope == pytest.approx(0.5) and fit.intercept == pytest.approx(10.0) and fit.r2 == pytest.approx(1.0)
    assert figures.fit_line([1, 2, 3], [4, 4, 4]).r2 == 1.0
    with pytest.raises(ValueError):
        figures.fit_line([5, 5], [1, 2])


def test_every_figure_is_written_as_png_of_its_stated_size_and_pdf(written):
    out, infos = written
    assert sorted(by_stem(infos)) == sorted([
        "acc_vs_time__cifar10__resnet20-resnet8", "acc_vs_time__digits__cnn_s-cnn_s",
        "acc_vs_flops__cifar10__resnet20-resnet8", "acc_vs_flops__digits__cnn_s-cnn_s",
        "learning_curves__cifar10__resnet20-resnet8", *(f"learning_curves__digits__cnn_s-cnn_s__n{s}" for s in SCALES),
        "data_scale_top1__digits__cnn_s-cnn_s", "data_scale_time__digits__cnn_s-cnn_s",
        "diagnostics__cifar10__resnet20-resnet8__ssdkd", "samples__cifar10__resnet20-resnet8__ssdkd",
        "diagnostics__digits__cnn_s-cnn_s__ssdkd__n100", "samples__digits__cnn_s-cnn_s__ssdkd__n100"])
    for info in infos:
        height, width = imread(info.path_png).shape[:2]
        w_in, h_in = info.size_in
        assert (width, height) == (round(w_in * figures.DPI), round(h_in * figures.DPI)), info.path_png.name
        assert info.path_pdf.read_bytes().startswith(b"%PDF") and info.path_pdf.parent == out
        assert info.caption and "\n" not in info.caption and info.title
    time_fig = by_stem(infos)["acc_vs_time__cifar10__resnet20-resnet8"]
    assert time_fig.size_in[0] == figures.COLUMN_IN and time_fig.dataset == "cifar10"


def test_the_pareto_front_of_the_tree_is_the_expected_methods(written):
    _, infos = written
    caption = by_stem(infos)["acc_vs_time__cifar10__resnet20-resnet8"].caption
    assert "Pareto front of the data-free methods (ssdkd, fast-fast2, cmi);" in caption


def test_failed_and_running_runs_are_never_drawn(written, df):
    _, infos = written
    assert {"dafl", "zskt"} <= set(df["method"])
    assert not any(m in info.caption + info.title for info in infos for m in ("dafl", "zskt"))
    assert "seeds (2)" in by_stem(infos)["acc_vs_time__cifar10__resnet20-resnet8"].caption
    unfinished = df[df["status"] != "completed"]
    for make in (figures.write_figures, figures.accuracy_vs_time, figures.accuracy_vs_flops, figures.learning_curves,
                 figures.data_scale_curves, figures.synthetic_data_figures):
        assert make(unfinished, Path("/nonexistent")) == []


def test_train_time_slope_of_a_linear_tree_is_the_known_slope(written):
    _, infos = written
    info = by_stem(infos)["data_scale_time__digits__cnn_s-cnn_s"]
    for label, (slope, intercept) in LINES.items():
        assert info.fits[label].slope == pytest.approx(slope)
        assert info.fits[label].intercept == pytest.approx(intercept)
        assert info.fits[label].r2 > 0.99
    assert any(f"ssdkd train time grows {0.5:.4g} s per sample" in note for note in info.notes)


def colour_pixels(png: Path, colour: str) -> int:
    """How many pixels of the PNG are exactly ``colour`` (marker interiors are)."""
    rgb = (imread(png)[..., :3] * 255).round().astype(int)
    want = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return int((np.abs(rgb - want).max(axis=-1) <= 1).sum())


def test_a_label_keeps_its_colour_in_every_figure(written, df):
    _, infos = written
    styles = figures.method_styles(df[df["status"] == "completed"]["label"])
    assert styles == figures.method_styles(reversed(list(styles)))  # the order labels come in does not matter
    assert styles["kd"].color in figures.NEUTRALS and styles["ssdkd"].color in figures.PALETTE
    assert len({s for s in styles.values()}) == len(styles)
    figs = by_stem(infos)
    # ssdkd is in cifar10's and digits' figures alike: the same colour in both
    for stem in ("acc_vs_time__cifar10__resnet20-resnet8", "acc_vs_flops__digits__cnn_s-cnn_s",
                 "data_scale_top1__digits__cnn_s-cnn_s", "learning_curves__digits__cnn_s-cnn_s__n100"):
        assert colour_pixels(figs[stem].path_png, styles["ssdkd"].color) > 20, stem
    # the digits figures hold only ssdkd and kd: a map made per figure would give ssdkd the
    # first palette colour; the report's map gives it the one it has in cifar10's figures
    first = figures.PALETTE[0]
    assert styles["ssdkd"].color != first
    assert colour_pixels(figs["data_scale_top1__digits__cnn_s-cnn_s"].path_png, first) == 0


def test_learning_curve_keeps_the_last_record_of_an_epoch_and_skips_corrupt_lines(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"event": "start"}, {"event": "epoch", "epoch": 0, "top1": 10.0, "seconds_synthesis": 1.0,
                                  "seconds_distillation": 2.0},
             {"event": "epoch", "epoch": 1, "top1": 20.0, "seconds_synthesis": 3.0, "seconds_distillation": 3.0},
             {"event": "resume", "epoch": 0},
             {"event": "epoch", "epoch": 1, "top1": 25.0, "seconds_synthesis": 3.5, "seconds_distillation": 4.0,
              "seconds_evaluation": 0.5},
             {"event": "epoch", "epoch": 2, "loss": 1.0, "seconds_synthesis": 5.0}]  # not evaluated
    text = [json.dumps(r) + "\n" for r in lines]
    text.insert(2, '{"event": "epoch", "epo\n')  # a torn line, as a crash mid-write leaves
    (run / "metrics.jsonl").write_text("".join(text))
    curve = figures.learning_curve(run)
    # seconds are train time so far (synthesis + augmentation + distillation), evaluation left out
    assert curve.to_dict("records") == [{"epoch": 0, "seconds": 3.0, "top1": 10.0},
                                        {"epoch": 1, "seconds": 7.5, "top1": 25.0}]
    assert figures.learning_curve(tmp_path / "missing").empty


def test_a_learning_curve_has_a_point_per_evaluated_epoch_and_ends_at_the_tables_train_time(tmp_path):
    """Issue 33, item 5: the seconds panel drew 7 markers for runs evaluated 3 times and
    ended at the fastest seed's time (35 s where the table said 47 s)."""
    root = tmp_path / "r"
    make_run(root, "fast", 0, 50.0, 40.0, preset="fast2", epochs=3)
    make_run(root, "fast", 1, 52.0, 54.0, preset="fast2", epochs=3)
    frame, _ = load_summaries(root)
    curves = [figures.learning_curve(Path(p)) for p in sorted(frame["path"])]
    points = figures.epoch_points(curves)
    assert list(points["epoch"]) == [0, 1, 2]  # one point per evaluated epoch
    assert points["seconds"].iloc[-1] == pytest.approx(frame["train_seconds"].mean()) == 47.0
    assert points["mean"].iloc[-1] == pytest.approx(51.0) and points["min"].iloc[-1] == 50.0
    (info,) = figures.learning_curves(frame, tmp_path / "out")
    assert "one marker each" in info.caption and "ends at its method's mean train time" in info.caption


def test_diagnostics_figures_come_from_the_first_seed(written):
    _, infos = written
    figs = by_stem(infos)
    hist = figs["diagnostics__cifar10__resnet20-resnet8__ssdkd"]
    assert "final pool of 500 images (seed 0, the first of seeds 0, 1)" in hist.caption  # seed 1's has 400
    grid = figs["samples__cifar10__resnet20-resnet8__ssdkd"]
    assert grid.size_in[0] == figures.WIDE_IN and "seed 0, the first of seeds 0, 1" in grid.caption
    pixels = imread(figs["samples__digits__cnn_s-cnn_s__ssdkd__n100"].path_png)[..., :3]
    assert (pixels.std(axis=(0, 1)) > 0.1).all()  # the sample images are drawn, not an empty canvas
    # only runs that left diagnostics.npz (the pool method) get these figures
    assert {stem.split("__")[3] for stem in figs if stem.startswith(("diagnostics", "samples"))} == {"ssdkd"}


def test_nothing_to_show_makes_no_figure(tmp_path):
    root = tmp_path / "r"
    make_run(root, "fast", 0, 50.0, 10.0, preset="fast2")
    frame, _ = load_summaries(root)
    infos = figures.write_figures(frame, tmp_path / "out")
    # one experiment, no data-scale grid, no diagnostics: accuracy (time, FLOPs) and its curves
    assert sorted(i.path_png.stem.split("__")[0] for i in infos) == ["acc_vs_flops", "acc_vs_time", "learning_curves"]
    assert figures.write_figures(pd.DataFrame(), tmp_path / "empty") == []


def test_the_fig2_comparison_lays_the_published_pool_methods_at_their_presets_over_each_other(tmp_path):
    root = tmp_path / "r"
    seed1 = pool_arrays(1)  # 400 images: the run that must not be drawn
    make_run(root, "ssdkd", 0, 12.0, 10.0, preset="cpu", data_scale=256, diagnostics=pool_arrays(0))
    make_run(root, "ssdkd", 0, 30.0, 50.0, preset="cpu", data_scale=5000, diagnostics=seed1)
    make_run(root, "ssdkd", 0, 20.0, 20.0, preset="no-ps-cpu", data_scale=1250, diagnostics=pool_arrays(2))
    make_run(root, "fast", 0, 30.0, 40.0, preset="fast2-cpu", data_scale=5000, diagnostics=pool_arrays(0))
    make_run(root, "fast", 0, 50.0, 80.0, preset="fast10-cpu", diagnostics=pool_arrays(0))
    make_run(root, "deepinv", 0, 25.0, 90.0, preset="cpu")  # no diagnostics: not drawn
    frame, _ = load_summaries(root)
    infos = by_stem(figures.synthetic_data_comparison(frame, tmp_path / "out"))
    info = infos["diagnostics-comparison__cifar10__resnet20-resnet8"]
    entropy = f"{diagnostics.summarize(pool_arrays(0), 10)['normalised_entropy']:.3f}"
    assert (f"fast-fast10-cpu (seed 0): 500 images, class entropy {entropy}, mean confidence "
            f"{pool_arrays(0)['confidence'].mean():.2f}") in info.caption
    assert "fast-fast2-cpu N=5,000 (seed 0): 500 images" in info.caption
    assert "ssdkd-cpu N=256 (seed 0): 500 images" in info.caption  # its preset's own scale, not 5,000
    assert "400 images" not in info.caption and "no-ps" not in info.caption and "deepinv" not in info.caption
    height, width = imread(info.path_png).shape[:2]
    assert (width, height) == (round(info.size_in[0] * figures.DPI), round(info.size_in[1] * figures.DPI))
    # one such method alone is no comparison
    lone = tmp_path / "lone"
    make_run(lone, "fast", 0, 50.0, 80.0, preset="fast10-cpu", diagnostics=pool_arrays(0))
    assert figures.synthetic_data_comparison(load_summaries(lone)[0], tmp_path / "out2") == []


def test_left_out_labels_leave_the_overview_figures_but_not_the_others(df, written, tmp_path):
    infos = by_stem(figures.write_figures(df, tmp_path, leave_out={"cmi"}))
    drawn = by_stem(written[1])  # the same figures with nothing left out
    styles = figures.method_styles(df[df["status"] == "completed"]["label"])  # the map still has cmi
    time_fig = infos["acc_vs_time__cifar10__resnet20-resnet8"]
    assert "Pareto front of the data-free methods (ssdkd, fast-fast2);" in time_fig.caption  # cmi's point is gone
    for stem in ("acc_vs_time__cifar10__resnet20-resnet8", "acc_vs_flops__cifar10__resnet20-resnet8",
                 "learning_curves__cifar10__resnet20-resnet8"):
        assert infos[stem].caption.endswith(" Left out of this figure, kept in the tables: cmi."), stem
        assert colour_pixels(drawn[stem].path_png, styles["cmi"].color) > 20, stem
        assert colour_pixels(infos[stem].path_png, styles["cmi"].color) == 0, stem
        assert colour_pixels(infos[stem].path_png, styles["ssdkd"].color) > 20, stem  # colours unchanged
    assert "Left out" not in infos["acc_vs_time__digits__cnn_s-cnn_s"].caption  # no cmi there to leave out


def test_a_figure_exclude_matching_no_run_is_a_one_line_error_before_anything_is_written(tree, tmp_path, capsys):
    from dfkd_bench.cli import main

    out = tmp_path / "rep"
    assert main(["report", "--results", str(tree), "--out", str(out), "--figure-exclude", "cmi,nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--figure-exclude 'nosuch' matches no run" in err and "fast-fast2" in err
    assert not out.exists()
