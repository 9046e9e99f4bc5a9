"""PNG figures in the style of the paper: Fig. 5 (the run) and Fig. 3 (reconstructions from subsets)."""
from __future__ import annotations

import os
import typing

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy  # noqa: E402

Snapshot = dict[str, typing.Any]  # step, n_measured, visited, prediction, uncertainty, acquisition


UNCERTAINTY_TITLE = "uncertainty: 1 sigma of a measurement"


def _show(axis: typing.Any, image: numpy.ndarray, title: str, cmap: str = "viridis",
          label: str = "", limits: tuple[float, float] | None = None) -> None:
    low, high = limits if limits is not None else (None, None)
    shown = axis.imshow(image, cmap=cmap, interpolation="nearest", vmin=low, vmax=high)
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])
    colorbar = plt.colorbar(shown, ax=axis, fraction=0.046, pad=0.03)
    colorbar.ax.tick_params(labelsize=7)
    if label:
        colorbar.set_label(label, fontsize=7)


def _show_acquisition(axis: typing.Any, values: numpy.ndarray, title: str = "acquisition") -> None:
    """Log-EI spans thousands of nats far from the incumbent: show the top 12 (a factor e^12), where choices happen."""
    finite = values[numpy.isfinite(values)]
    high = float(finite.max()) if finite.size else 0.0
    low = float(finite.min()) if finite.size else 0.0
    if high - low > 12:
        title += " (top e^12)"
        values = numpy.clip(values, high - 12, high)
    _show(axis, values, title, cmap="cividis")


def _path(axis: typing.Any, visited: typing.Sequence[tuple[int, int]], n_seeds: int) -> None:
    if not visited:
        return
    points = numpy.asarray(visited, dtype=float)
    axis.scatter(points[:n_seeds, 1], points[:n_seeds, 0], s=14, marker="s", facecolors="none",
                 edgecolors="white", linewidths=0.8, label="seed")
    steps = points[n_seeds:]
    if len(steps):
        axis.plot(steps[:, 1], steps[:, 0], "-", color="white", linewidth=0.5, alpha=0.6)
        axis.scatter(steps[:, 1], steps[:, 0], s=10, c=numpy.arange(len(steps)), cmap="autumn", zorder=3,
                     label="DKL step")
        axis.scatter(steps[-1:, 1], steps[-1:, 0], s=60, marker="x", color="cyan", zorder=4, label="last")


def _common_limits(*images: numpy.ndarray | None) -> tuple[float, float] | None:
    finite = [image[numpy.isfinite(image)] for image in images if image is not None]
    values = numpy.concatenate(finite) if finite else numpy.empty(0)
    return (float(values.min()), float(values.max())) if values.size else None


def run_figure(path: str, survey: numpy.ndarray, visited: list[tuple[int, int]], n_seeds: int,
               final: Snapshot, snapshots: list[Snapshot], units: str, scalarizer: str,
               truth: numpy.ndarray | None = None) -> list[str]:
    """Overview (survey + path, prediction, uncertainty, acquisition, truth, error) and a per-step grid."""
    written = []
    columns = 4 + (2 if truth is not None else 0)
    figure, axes = plt.subplots(1, columns, figsize=(3.3 * columns, 3.3), constrained_layout=True)
    _show(axes[0], survey, f"HAADF survey, {len(visited)} measured", cmap="gray")
    _path(axes[0], visited, n_seeds)
    axes[0].legend(fontsize=6, loc="lower right", framealpha=0.5)
    # prediction and truth share one colour range, so the eye compares values, not two auto-scaled images
    limits = _common_limits(final["prediction"], truth) if truth is not None else None
    _show(axes[1], final["prediction"], f"DKL prediction: {scalarizer}", label=units, limits=limits)
    _show(axes[2], final["uncertainty"], UNCERTAINTY_TITLE, cmap="magma", label=units)
    _show_acquisition(axes[3], final["acquisition"])
    if truth is not None:
        _show(axes[4], truth, "ground truth (all patterns)", label=units, limits=limits)
        _path(axes[4], visited, n_seeds)
        _show(axes[5], final["prediction"] - truth, "prediction - truth", cmap="RdBu_r", label=units)
    overview = os.path.join(path, "overview.png")
    figure.savefig(overview, dpi=110)
    plt.close(figure)
    written.append(overview)
    if snapshots:
        figure, axes = plt.subplots(len(snapshots), 4, figsize=(13, 3.1 * len(snapshots)), constrained_layout=True,
                                    squeeze=False)
        for row, snapshot in zip(axes, snapshots):
            title = f"step {snapshot['step']} (n={snapshot['n_measured']})"
            _show(row[0], survey, title, cmap="gray")
            _path(row[0], snapshot["visited"], n_seeds)
            _show(row[1], snapshot["prediction"], "prediction", label=units)
            _show(row[2], snapshot["uncertainty"], "uncertainty (1 sigma)", cmap="magma", label=units)
            _show_acquisition(row[3], snapshot["acquisition"])
            if snapshot.get("next_position") is not None:
                y, x = snapshot["next_position"]
                row[3].scatter([x], [y], s=60, marker="x", color="red")
        steps_path = os.path.join(path, "steps.png")
        figure.savefig(steps_path, dpi=90)
        plt.close(figure)
        written.append(steps_path)
    return written


def reconstruct_figure(path: str, survey: numpy.ndarray, truth: numpy.ndarray, fractions: list[float],
                       predictions: list[numpy.ndarray], nrmse: list[float], units: str, scalarizer: str) -> str:
    columns = 2 + len(fractions)
    figure, axes = plt.subplots(1, columns, figsize=(3.2 * columns, 3.4), constrained_layout=True)
    _show(axes[0], survey, "HAADF survey", cmap="gray")
    _show(axes[1], truth, f"ground truth: {scalarizer}", label=units)
    low, high = float(numpy.nanmin(truth)), float(numpy.nanmax(truth))
    for axis, fraction, prediction, error in zip(axes[2:], fractions, predictions, nrmse):
        shown = axis.imshow(prediction, vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(f"DKL from {fraction:g} of points\nNRMSE {error:.3f}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
        plt.colorbar(shown, ax=axis, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    output = os.path.join(path, "reconstruct.png")
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output
