"""Figures in the style of the paper: Fig. 5 (the run) and Fig. 3 (reconstructions from subsets).

Every function returns a `matplotlib.figure.Figure` built without pyplot, so importing this module never changes
the user's backend (Jupyter shows the returned figure inline); `save_png` writes one through the Agg canvas.
Scale bars in nm where the scan step is known; prediction and truth share one colour range.
"""
from __future__ import annotations

import math
import typing

import numpy
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Snapshot = dict[str, typing.Any]  # step, n_measured, visited, prediction, uncertainty, acquisition
UNCERTAINTY_TITLE = "uncertainty: 1 sigma of a measurement"
LOG_EI_SPAN = 12.0  # log-EI shown over its top 12 nats (a factor e^12 ~ 1.6e5): where the choices happen
ACQUISITION_LABELS = {
    "ei": "log expected improvement (standardized units)",
    "ucb": "upper confidence bound (standardized units)",
    "uncertainty": "predictive std (standardized units)",
    "map": "integrated variance reduction (feature space)",
}


def save_png(figure: Figure, path: str, dpi: int = 110) -> str:
    """Render with the Agg canvas (no pyplot, no backend switch) and close nothing the caller owns."""
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=dpi)
    return path


def _nice_length(span: float) -> float:
    """1, 2 or 5 x 10^k, about a fifth of `span`."""
    target = span / 5
    power = 10 ** math.floor(math.log10(target))
    return next(step * power for step in (5, 2, 1) if step * power <= target)


def scale_bar(axis: Axes, width_px: int, nm_per_px: float | None, color: str = "white") -> None:
    if not nm_per_px:
        return
    length_nm = _nice_length(width_px * nm_per_px)
    length_px = length_nm / nm_per_px
    shown = axis.images[0].get_array() if axis.images else None
    height, width = shown.shape[:2] if shown is not None else (width_px, width_px)
    y = height - 1.5 - 0.04 * height
    x = 0.04 * width - 0.5
    outline = [patheffects.withStroke(linewidth=4.5 if color == "white" else 0, foreground="black")]
    axis.plot([x, x + length_px], [y, y], color=color, linewidth=3, solid_capstyle="butt", path_effects=outline)
    axis.text(x + length_px / 2, y - 0.03 * height, f"{length_nm:g} nm", color=color, ha="center", va="bottom",
              fontsize=7, fontweight="bold", path_effects=[patheffects.withStroke(linewidth=1.5, foreground="black")]
              if color == "white" else None)


def _show(figure: Figure, axis: Axes, image: numpy.ndarray, title: str, cmap: str = "viridis", label: str = "",
          limits: tuple[float, float] | None = None, nm_per_px: float | None = None) -> None:
    vmin, vmax = limits if limits is not None else (None, None)
    shown = axis.imshow(image, cmap=cmap, interpolation="nearest", vmin=vmin, vmax=vmax)
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])
    colorbar = figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.03)
    colorbar.ax.tick_params(labelsize=7)
    if label:
        colorbar.set_label(label, fontsize=7)
    scale_bar(axis, image.shape[1], nm_per_px, "white" if cmap in ("gray", "viridis", "magma", "cividis") else "k")


def shared_limits(*images: numpy.ndarray | None) -> tuple[float, float] | None:
    """One colour range for maps that must be compared by eye (prediction and truth)."""
    values = [image[numpy.isfinite(image)] for image in images if image is not None]
    values = [v for v in values if v.size]
    if not values:
        return None
    joined = numpy.concatenate(values)
    return float(joined.min()), float(joined.max())


def _show_acquisition(figure: Figure, axis: Axes, values: numpy.ndarray, kind: str,
                      nm_per_px: float | None) -> None:
    """Log-EI spans thousands of nats far from the incumbent: its top LOG_EI_SPAN nats are shown, lower clipped."""
    label = ACQUISITION_LABELS.get(kind, "acquisition")
    finite = values[numpy.isfinite(values)]
    high = float(finite.max()) if finite.size else 0.0
    low = float(finite.min()) if finite.size else 0.0
    if kind == "ei" and high - low > LOG_EI_SPAN:
        values = numpy.clip(values, high - LOG_EI_SPAN, high)
        label = (f"log EI (standardized); top {LOG_EI_SPAN:g} shown,\n"
                 f"lower clipped (EI < max / {math.exp(LOG_EI_SPAN):.1e})")
    _show(figure, axis, values, f"acquisition ({kind})", cmap="cividis", label=label, nm_per_px=nm_per_px)


def _path(axis: Axes, visited: typing.Sequence[tuple[int, int]], n_seeds: int) -> None:
    if not visited:
        return
    points = numpy.asarray(visited, dtype=float)
    axis.scatter(points[:n_seeds, 1], points[:n_seeds, 0], s=14, marker="s", facecolors="none",
                 edgecolors="white", linewidths=0.8, label="random seed")
    steps = points[n_seeds:]
    if len(steps):
        axis.plot(steps[:, 1], steps[:, 0], "-", color="white", linewidth=0.5, alpha=0.6)
        axis.scatter(steps[:, 1], steps[:, 0], s=10, c=numpy.arange(len(steps)), cmap="autumn", zorder=3,
                     label="DKL step (early: red)")
        axis.scatter(steps[-1:, 1], steps[-1:, 0], s=60, marker="x", color="cyan", zorder=4, label="last")


def overview_figure(survey: numpy.ndarray, visited: list[tuple[int, int]], n_seeds: int, final: Snapshot,
                    units: str, scalarizer: str, truth: numpy.ndarray | None = None, *,
                    survey_name: str = "survey", nm_per_px: float | None = None, acquisition: str = "ei",
                    nrmse: float | None = None) -> Figure:
    """Survey + path, prediction, uncertainty, acquisition, and with the truth: truth and prediction - truth."""
    columns = 4 + (2 if truth is not None else 0)
    figure = Figure(figsize=(3.4 * columns, 3.5), constrained_layout=True)
    axes = figure.subplots(1, columns)
    _show(figure, axes[0], survey, f"{survey_name}\n{len(visited)} measured", cmap="gray", label="counts",
          nm_per_px=nm_per_px)
    _path(axes[0], visited, n_seeds)
    axes[0].legend(fontsize=6, loc="upper right", framealpha=0.5)
    limits = shared_limits(final["prediction"], truth)
    _show(figure, axes[1], final["prediction"], f"predicted map: {scalarizer}", label=f"{scalarizer} ({units})",
          limits=limits, nm_per_px=nm_per_px)
    _show(figure, axes[2], final["uncertainty"], UNCERTAINTY_TITLE, cmap="magma",
          label=f"1 sigma ({units})", nm_per_px=nm_per_px)
    _show_acquisition(figure, axes[3], final["acquisition"], acquisition, nm_per_px)
    if truth is not None:
        _show(figure, axes[4], truth, "ground truth (all patterns)", label=f"{scalarizer} ({units})", limits=limits,
              nm_per_px=nm_per_px)
        _path(axes[4], visited, n_seeds)
        error = final["prediction"] - truth
        bound = float(numpy.nanmax(numpy.abs(error))) if numpy.isfinite(error).any() else 1.0
        title = "prediction - truth" + (f"\nmap NRMSE {nrmse:.2f}" if nrmse is not None else "")
        _show(figure, axes[5], error, title, cmap="RdBu_r", label=f"error ({units})", limits=(-bound, bound),
              nm_per_px=nm_per_px)
    return figure


def steps_figure(survey: numpy.ndarray, n_seeds: int, snapshots: list[Snapshot], units: str, *,
                 survey_name: str = "survey", nm_per_px: float | None = None, acquisition: str = "ei") -> Figure:
    """The maps at a few steps of the run (rows), each with the next position the acquisition chose."""
    figure = Figure(figsize=(13.5, 3.2 * len(snapshots)), constrained_layout=True)
    axes = figure.subplots(len(snapshots), 4, squeeze=False)
    for row, snapshot in zip(axes, snapshots):
        _show(figure, row[0], survey, f"{survey_name}\nstep {snapshot['step']} (n={snapshot['n_measured']})",
              cmap="gray", label="counts", nm_per_px=nm_per_px)
        _path(row[0], snapshot["visited"], n_seeds)
        _show(figure, row[1], snapshot["prediction"], "prediction", label=units, nm_per_px=nm_per_px)
        _show(figure, row[2], snapshot["uncertainty"], "uncertainty (1 sigma)", cmap="magma", label=f"1 sigma ({units})",
              nm_per_px=nm_per_px)
        _show_acquisition(figure, row[3], snapshot["acquisition"], acquisition, nm_per_px)
        if snapshot.get("next_position") is not None:
            y, x = snapshot["next_position"]
            row[3].scatter([x], [y], s=60, marker="x", color="red", label="next")
    return figure


def reconstruct_figure(survey: numpy.ndarray, truth: numpy.ndarray, fractions: list[float],
                       predictions: list[numpy.ndarray], nrmse: list[float], units: str, scalarizer: str, *,
                       survey_name: str = "survey", nm_per_px: float | None = None) -> Figure:
    columns = 2 + len(fractions)
    figure = Figure(figsize=(3.3 * columns, 3.5), constrained_layout=True)
    axes = figure.subplots(1, columns)
    _show(figure, axes[0], survey, survey_name, cmap="gray", label="counts", nm_per_px=nm_per_px)
    limits = shared_limits(truth, *predictions)
    _show(figure, axes[1], truth, f"ground truth: {scalarizer}", label=f"{scalarizer} ({units})", limits=limits,
          nm_per_px=nm_per_px)
    for axis, fraction, prediction, error in zip(axes[2:], fractions, predictions, nrmse):
        _show(figure, axis, prediction, f"DKL from {fraction:g} of points\nNRMSE {error:.3f}",
              label=f"{scalarizer} ({units})", limits=limits, nm_per_px=nm_per_px)
    return figure
