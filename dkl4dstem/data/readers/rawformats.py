"""Binary detector formats read with pread (bounded RSS, no extra dependency): Quantum Detectors Merlin `.mib`
and EMPAD `.raw` (+ its `.xml`). Neither stores the scan shape reliably: `--scan-shape Y,X`, else the EMPAD
`.xml` (pix_x / pix_y or the `scan_xN_yM.raw` name), else a square scan."""
from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ElementTree

from dkl4dstem.errors import InputError
from dkl4dstem.data.readers.base import Opened, RawFrames, ScanView, scan_shape_for

MIB_DTYPES = {"U01": ">u1", "U08": ">u1", "U16": ">u2", "U32": ">u4"}
EMPAD_RAW_SHAPE = (130, 128)  # 128 x 128 pixels + 2 rows of per-frame metadata, float32 little-endian


def open_mib(path: str, scan_shape: tuple[int, int] | None) -> Opened:
    with open(path, "rb") as file:
        head = file.read(768).decode("ascii", errors="replace")
    fields = head.split(",")
    if len(fields) < 7 or not fields[0].startswith("MQ1"):
        raise InputError(f"{path}: not a Merlin .mib file (header {head[:20]!r})")
    try:
        header, width, height = int(fields[2]), int(fields[4]), int(fields[5])
    except ValueError:
        raise InputError(f"{path}: unreadable Merlin header {head[:60]!r}") from None
    dtype = MIB_DTYPES.get(fields[6].strip())
    if dtype is None:
        raise InputError(f"{path}: Merlin pixel depth {fields[6]!r} (raw mode) is not supported; save the "
                         "acquisition in counting mode (U08/U16/U32)")
    frame_bytes = header + width * height * int(dtype[-1])
    n_frames = os.path.getsize(path) // frame_bytes
    if n_frames < 1:
        raise InputError(f"{path}: no complete frame")
    # Merlin stores rows bottom-up: flipped as rosettasciio / py4DSTEM show them
    frames = RawFrames(path, n_frames, (height, width), dtype, header=header, flip_rows=True)
    try:
        data = ScanView(frames, scan_shape_for(n_frames, scan_shape, path))
    except BaseException:
        frames.close()
        raise
    return Opened(data, f"Merlin .mib ({width}x{height} {fields[6].strip()}, {n_frames} frames)",
                  closer=frames.close)


def _empad_xml(path: str) -> str | None:
    stem = os.path.splitext(path)[0]
    if os.path.exists(stem + ".xml"):
        return stem + ".xml"
    folder, name = os.path.split(path)
    for candidate in sorted(os.listdir(folder or ".")):
        if candidate.endswith(".xml"):
            text = open(os.path.join(folder, candidate), errors="replace").read()
            if name in text:
                return os.path.join(folder, candidate)
    return None


def _empad_scan_from_xml(root: ElementTree.Element, raw_name: str) -> tuple[int, int] | None:
    pix_x, pix_y = root.findtext("pix_x"), root.findtext("pix_y")
    if pix_x and pix_y:
        return (int(pix_y), int(pix_x))
    match = re.search(r"_x(\d+)_y(\d+)", raw_name)
    return (int(match.group(2)), int(match.group(1))) if match else None


def open_empad(path: str, scan_shape: tuple[int, int] | None) -> Opened:
    """`path` is the .raw or the .xml that names it."""
    xml_path = path if path.lower().endswith(".xml") else _empad_xml(path)
    root = ElementTree.parse(xml_path).getroot() if xml_path else None
    raw_path = path
    if path.lower().endswith(".xml"):
        name = root.findtext("raw_file/filename") if root is not None else None
        if not name:
            raise InputError(f"{path}: no raw_file/filename in this EMPAD .xml")
        raw_path = os.path.join(os.path.dirname(path), os.path.basename(name))
        if not os.path.exists(raw_path):
            raise InputError(f"{path}: its raw file {raw_path} is missing")
    frame_bytes = EMPAD_RAW_SHAPE[0] * EMPAD_RAW_SHAPE[1] * 4
    n_frames = os.path.getsize(raw_path) // frame_bytes
    if n_frames < 1 or os.path.getsize(raw_path) % frame_bytes:
        raise InputError(f"{raw_path}: size {os.path.getsize(raw_path)} is not a whole number of EMPAD frames "
                         f"(130 x 128 float32)")
    from_xml = _empad_scan_from_xml(root, os.path.basename(raw_path)) if root is not None else None
    shape = scan_shape_for(n_frames, scan_shape or from_xml, raw_path)
    frames = RawFrames(raw_path, n_frames, EMPAD_RAW_SHAPE, "<f4", keep_rows=128)
    opened = Opened(ScanView(frames, shape), "EMPAD .raw", closer=frames.close)
    if root is not None:
        _empad_calibration(opened, root, shape)
    return opened


def _empad_calibration(opened: Opened, root: ElementTree.Element, shape: tuple[int, int]) -> None:
    fov = root.findtext("iom_measurements/optics/get_full_scan_field_of_view")
    if fov:
        try:
            values = ast.literal_eval(fov)
            opened.set("nm_per_px", float(values[0]) / shape[1] * 1e9,
                       "EMPAD .xml (get_full_scan_field_of_view)")
        except (ValueError, SyntaxError, TypeError, IndexError):
            pass
