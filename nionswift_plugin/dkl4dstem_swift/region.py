"""Where a run may measure, drawn by the user on the survey with Swift's own graphics.

Convention (read when Start is pressed):
* every rectangle or ellipse on the survey whose label does not start with "exclude" is a *region*: when there is
  at least one, the run measures only inside their union;
* a rectangle or ellipse labelled "exclude..." is never measured (a hole, a contaminated or already exposed area);
* a pixel counts as inside a shape when its centre is (Swift's own mask rule: `Graphic.get_mask`).
The shapes are kept as plain dictionaries (normalized bounds, rotation) in the run metadata and the session file, so
a resumed run rebuilds exactly the same mask.
"""
from __future__ import annotations

import typing

import numpy

from nion.swift.model import Graphics
from nion.utils import Geometry

if typing.TYPE_CHECKING:
    from nion.swift.model import DisplayItem

REGION_LABEL = "region"
EXCLUDE_LABEL = "exclude"
REGION_COLOR = "#0F0"
EXCLUDE_COLOR = "#F44"
_KINDS = {"rect-graphic": "rectangle", "ellipse-graphic": "ellipse"}


def is_exclude(label: str | None) -> bool:
    return str(label or "").strip().lower().startswith(EXCLUDE_LABEL)


def shapes_on(display_item: DisplayItem.DisplayItem | None) -> list[dict[str, typing.Any]]:
    """The region and exclusion shapes on the survey, as JSON-friendly dictionaries."""
    if display_item is None:
        return []
    shapes = []
    for graphic in display_item.graphics:
        kind = _KINDS.get(graphic.type)
        if kind is None or not isinstance(graphic, Graphics.RectangleTypeGraphic):
            continue
        bounds = Geometry.FloatRect.make(graphic.bounds)
        shapes.append({"role": "exclude" if is_exclude(graphic.label) else "region", "kind": kind,
                       "top": bounds.top, "left": bounds.left, "height": bounds.height, "width": bounds.width,
                       "rotation": float(graphic.rotation), "label": str(graphic.label or "")})
    return shapes


def shape_mask(shape: typing.Mapping[str, typing.Any], image_shape: tuple[int, int]) -> numpy.ndarray:
    """Pixels whose centre lies in the shape (bool, image_shape)."""
    bounds = Geometry.FloatRect.from_tlhw(float(shape["top"]), float(shape["left"]), float(shape["height"]),
                                          float(shape["width"]))
    rotation = float(shape.get("rotation", 0.0))
    if bounds.height <= 0 or bounds.width <= 0:  # a shape being drawn (or collapsed): covers nothing
        return numpy.zeros(image_shape, dtype=bool)
    item: Graphics.MaskItem
    if shape.get("kind") == "ellipse":
        item = Graphics.EllipseMaskItem(bounds, rotation)
    else:
        item = Graphics.RectangleMaskItem(bounds, rotation)
    return numpy.asarray(item.get_mask_data(image_shape)) > 0


def exclude_mask(shapes: typing.Sequence[typing.Mapping[str, typing.Any]],
                 image_shape: tuple[int, int]) -> numpy.ndarray | None:
    """True where the run must not measure: outside every region (when there is one) or inside an exclusion.

    None when there are no shapes (the whole survey is open)."""
    if not shapes:
        return None
    regions = [s for s in shapes if s.get("role") != "exclude"]
    excluded = numpy.zeros(image_shape, dtype=bool)
    if regions:
        inside = numpy.zeros(image_shape, dtype=bool)
        for shape in regions:
            inside |= shape_mask(shape, image_shape)
        excluded |= ~inside
    for shape in shapes:
        if shape.get("role") == "exclude":
            excluded |= shape_mask(shape, image_shape)
    return excluded


def describe(shapes: typing.Sequence[typing.Mapping[str, typing.Any]], mask: numpy.ndarray | None) -> str:
    """One line for the panel: how many shapes and how many positions are open."""
    if mask is None:
        return "Region: whole survey (draw a rectangle on it to restrict the run)"
    n_regions = sum(1 for s in shapes if s.get("role") != "exclude")
    n_excluded = len(shapes) - n_regions
    open_count = int(mask.size - mask.sum())
    parts = []
    if n_regions:
        parts.append(f"{n_regions} region{'s' if n_regions > 1 else ''}")
    if n_excluded:
        parts.append(f"{n_excluded} exclusion{'s' if n_excluded > 1 else ''}")
    return f"Region: {', '.join(parts)}; {open_count} of {mask.size} positions open"


def set_role(graphic: Graphics.Graphic, role: str) -> None:
    """Label and colour a shape as a region (green) or an exclusion (red)."""
    graphic.label = EXCLUDE_LABEL if role == "exclude" else REGION_LABEL
    graphic.stroke_color = EXCLUDE_COLOR if role == "exclude" else REGION_COLOR


def add_shape(display_item: DisplayItem.DisplayItem, role: str) -> Graphics.RectangleGraphic:
    """A rectangle for the user to move and resize: a region (green) or an exclusion (red), centred."""
    graphic = Graphics.RectangleGraphic()
    graphic.bounds = Geometry.FloatRect.from_tlhw(0.3, 0.3, 0.4, 0.4) if role == "region" else \
        Geometry.FloatRect.from_tlhw(0.4, 0.4, 0.2, 0.2)
    set_role(graphic, role)
    display_item.add_graphic(graphic)
    return graphic


def pixel_of(position: Geometry.FloatPoint, image_shape: tuple[int, int]) -> tuple[int, int]:
    """The survey pixel under a normalized position (clamped into the image)."""
    height, width = image_shape
    return (min(max(int(position.y * height), 0), height - 1), min(max(int(position.x * width), 0), width - 1))


def position_nm(pixel: typing.Sequence[float], calibrations: typing.Sequence[typing.Any]) -> tuple[float, float] | None:
    """Calibrated (y, x) in nm of a survey pixel (its centre), None when the survey is not calibrated in length."""
    scale_to_nm = {"nm": 1.0, "µm": 1e3, "um": 1e3, "Å": 0.1, "A": 0.1, "pm": 1e-3}
    if len(calibrations) < 2:
        return None
    result = []
    for value, calibration in zip(pixel, calibrations[-2:]):
        factor = scale_to_nm.get(str(calibration.units or ""))
        if factor is None or not calibration.scale:
            return None
        result.append(float(calibration.convert_to_calibrated_value(float(value) + 0.5)) * factor)
    return result[0], result[1]


def format_nm(nm: tuple[float, float] | None) -> str:
    return f" = ({nm[0]:.2f}, {nm[1]:.2f}) nm" if nm is not None else ""
