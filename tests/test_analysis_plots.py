"""Figures: valid PNG/PDF files, the right panels, legends and the smoothing they draw."""

from __future__ import annotations

import numpy as np
import pytest

from multirun_analysis import load_runs
from multirun_analysis import plots
from multirun_analysis.synthetic import write_run

T = 12
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_figure_files(paths):
    png, pdf = paths
    assert png.suffix == ".png" and pdf.suffix == ".pdf"
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 2_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 300 and height > 200
    pdf_data = pdf.read_bytes()
    assert pdf_data[:5] == b"%PDF-" and b"%%EOF" in pdf_data[-1024:] and len(pdf_data) > 1_000


def legend_texts(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.fixture(scope="module")
def df(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    for learner, grid in (("bp", [(None, None)]), ("adapted", [(cl, ch) for cl in (-0.5, 0.5) for ch in (0.5, 1.0)])):
        for c_low, c_high in grid:
            for seed in range(2):
                learner_cfg = {"name": learner}
                if c_low is not None:
                    learner_cfg.update(c_low=c_low, c_high=c_high)
                acc = np.linspace(0.9, 0.6, T) + (c_low or 0) / 10 + seed / 100
                write_run(
                    root / f"{learner}_{c_low}_{c_high}_{seed}", {"seed": seed, "learner": learner_cfg},
                    {"accuracy": acc,
                     "effective_rank": {str(layer): np.linspace(90, 40, T) / layer for layer in (1, 2, 3)},
                     "time_inference_b1": np.full(T, 1e-4 * (1 + seed)),
                     "time_update_b1": np.full(T, 4e-4)},
                    choices={"learner": learner, **({"reset_strategy": "relu"} if learner == "adapted" else {})},
                    arrays={"grad_covariance": {T - 1: np.corrcoef(rng.normal(size=(6, 30)))}}
                    if seed == 0 and c_low in (None, 0.5) and c_high in (None, 1.0) else None,
                )
    return load_runs(root)


def test_smoothed_curves_running_window_of_5(df):
    curves = plots.smoothed_curves(df, "accuracy", window=5)
    bp = curves[curves["condition"] == "learner=bp"].set_index("task")
    raw = np.linspace(0.9, 0.6, T)
    seeds = [raw + s / 100 for s in range(2)]
    smooth = [np.array([x[max(0, t - 4): t + 1].mean() for t in range(T)]) for x in seeds]
    np.testing.assert_allclose(bp["mean"], (smooth[0] + smooth[1]) / 2)
    np.testing.assert_allclose(bp["std"], np.std(np.stack(smooth), axis=0, ddof=1))
    assert (bp["n"] == 2).all()


def test_accuracy_curves(df, tmp_path):
    fig = plots.plot_curves(df, "accuracy")
    ax = fig.axes[0]
    texts = legend_texts(fig)
    assert texts[0] == "Backprop (n=2)"
    assert all(t.startswith("Activation-adapted (ReLU strategy)") for t in texts[1:]) and len(texts) == 5
    assert ax.get_ylabel() == "Online accuracy (%)" and ax.get_xlabel() == "Task"
    # the drawn line is the smoothed mean in percent
    line = ax.get_lines()[0]
    assert line.get_ydata()[0] == pytest.approx(100 * (0.9 + 0.005))
    assert_figure_files(plots.save_figure(fig, tmp_path / "accuracy"))


def test_per_layer_metric_is_faceted(df, tmp_path):
    fig = plots.plot_curves(df, "effective_rank")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["Layer 1", "Layer 2", "Layer 3"]
    assert visible[0].get_ylabel() == "Effective rank (units)"
    assert_figure_files(plots.save_figure(fig, tmp_path / "effective_rank"))


def test_grid_heatmap(df, tmp_path):
    adapted = df[df["choice.learner"] == "adapted"]
    fig = plots.plot_grid(adapted, "learner.c_low", "learner.c_high", stat="mean_accuracy")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "c_low" and ax.get_ylabel() == "c_high"
    annotations = sorted(float(t.get_text()) for t in ax.texts)
    assert len(annotations) == 4
    assert annotations[-1] == pytest.approx(100 * (0.75 + 0.05 + 0.005), abs=0.05)
    assert_figure_files(plots.save_figure(fig, tmp_path / "grid"))


def test_metric_vs_rate_log_axis(df, tmp_path):
    adapted = df[df["choice.learner"] != "bp"]
    fig = plots.plot_vs(adapted, "learner.c_high", stat="last15", log=True)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
    assert_figure_files(plots.save_figure(fig, tmp_path / "vs"))
    # Backprop has no c_low: drawn as a reference line, and negative x means a linear axis
    fig = plots.plot_vs(df, "learner.c_low", stat="mean_accuracy")
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear"
    assert any(t.startswith("Backprop") for t in legend_texts(fig))


def test_grad_covariance_heatmaps(df, tmp_path):
    found = plots.grad_covariance(df)
    assert [f[1] for f in found] == ["Backprop", "Activation-adapted (ReLU strategy), c_low=0.5, c_high=1"]
    assert found[0][3] == T - 1 and found[0][2] == 0
    assert found[0][4].shape == (6, 6)
    fig = plots.plot_grad_covariance(df)
    assert_figure_files(plots.save_figure(fig, tmp_path / "grad_covariance"))
    with pytest.raises(FileNotFoundError):
        plots.plot_grad_covariance(df, task=3)


def test_runtime_table_and_plot(df, tmp_path):
    table = plots.runtime_table(df)
    assert list(table.mean.columns) == ["Inference, batch 1 (µs)", "Update, batch 1 (µs)"]
    assert table.mean.loc["Backprop", "Inference, batch 1 (µs)"] == pytest.approx(150.0)
    assert table.std.loc["Backprop", "Inference, batch 1 (µs)"] == pytest.approx(np.std([100, 200], ddof=1))
    assert table.mean["Update, batch 1 (µs)"].tolist() == pytest.approx([400.0] * 5)
    fig = plots.plot_runtime(df)
    assert fig.axes[0].get_ylabel() == "Time (µs)"
    assert_figure_files(plots.save_figure(fig, tmp_path / "runtime"))


def test_numeric_keys(df):
    assert plots.numeric_keys(df) == ["learner.c_low", "learner.c_high"]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("kind", ["curves", "vs"])
def test_legend_hides_no_data(tmp_path, kind):
    """Four conditions, the lowest ending at the bottom right where a legend used to sit: the
    legend is outside every panel, so it overlaps no plotted point."""
    for k, (learner, rate) in enumerate([("bp", None), ("cbp", 1e-4), ("cbp", 1e-5), ("cbp", 1e-6)]):
        cfg = {"seed": 0, "learner": {"name": learner, **({"replacement_rate": rate} if rate else {})}}
        write_run(tmp_path / str(k), cfg, {"accuracy": np.linspace(0.9, 0.1 + 0.2 * k, T)}, choices={"learner": learner})
    df = load_runs(tmp_path)
    fig = plots.plot_curves(df, "accuracy") if kind == "curves" else plots.plot_vs(
        df, "learner.replacement_rate", stat="mean_accuracy")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert len(legend.get_texts()) == (4 if kind == "curves" else 2)  # vs: cbp over its rates, bp as a reference
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not _overlaps(box, ax.get_window_extent(renderer))
        for line in ax.get_lines():  # and, explicitly, not the curves' last points
            x, y = ax.transData.transform((line.get_xdata()[-1], line.get_ydata()[-1]))
            assert not (box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1)
