"""Small files of every readable format, written from the shipped abTEM graphene data with the real writer
libraries where they exist (py4DSTEM/emdfile, HyperSpy, nion.data + Swift's storage handlers, nionswift-io's DM
writer), else with h5py / zarr / raw bytes in the exact layout of the real format. Known calibrations
(0.05 nm/px, 1.978 mrad/px, 30 mrad, 60 kV) so a reader's result can be checked."""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import typing

import h5py
import numpy

NM_PER_PX = 0.05
SEMIANGLE_MRAD = 30.0
ENERGY_EV = 60e3
COUNTS = 3.0e7  # integer detectors (U16): intensity x COUNTS rounded, the brightest pixel ~ 49,000 counts


@dataclasses.dataclass
class Case:
    path: str
    args: list[str]  # CLI flags the format needs (scan shape, calibrations it cannot store)
    expect: dict[str, float]  # calibrations the reader must find in the file
    scale: float = 1.0  # stored pattern = scale * graphene pattern (rounded for integer formats)
    writer: str = ""


def wavelength_nm(energy_ev: float) -> float:
    return 1.2398419843320026e3 / numpy.sqrt(energy_ev * (2 * 510998.95 + energy_ev))


def emd(arrays: dict[str, typing.Any], folder: str) -> Case:
    path = os.path.join(folder, "graphene.emd")
    mrad = float(arrays["mrad_per_px"])
    try:
        import py4DSTEM  # numpy<2 pinned upstream: often absent; emdfile writes the same EMD 1.0 layout
    except ImportError:
        py4DSTEM = None
    if py4DSTEM is not None:
        cube = py4DSTEM.DataCube(data=arrays["data"])
        cube.calibration.set_R_pixel_size(NM_PER_PX * 10)
        cube.calibration.set_R_pixel_units("A")
        cube.calibration.set_Q_pixel_size(mrad)
        cube.calibration.set_Q_pixel_units("mrad")
        cube.calibration.set_convergence_semiangle_mrad(SEMIANGLE_MRAD)
        py4DSTEM.save(path, cube, mode="o")
        return Case(path, [], {"nm_per_px": NM_PER_PX, "mrad_per_px": mrad, "semiangle_mrad": SEMIANGLE_MRAD},
                    writer="py4DSTEM")
    import emdfile
    cube = emdfile.Array(data=arrays["data"], name="datacube", units="pixel intensity",
                         dim_names=["Rx", "Ry", "Qx", "Qy"])
    root = emdfile.Root(name="datacube_root")
    root.tree(cube)
    calibration = emdfile.Metadata(name="calibration")  # py4DSTEM's Calibration keys
    for key, value in {"R_pixel_size": NM_PER_PX * 10, "R_pixel_units": "A", "Q_pixel_size": mrad,
                       "Q_pixel_units": "mrad", "convergence_semiangle_mrad": SEMIANGLE_MRAD}.items():
        calibration[key] = value
    root.metadata = calibration
    emdfile.save(path, root, mode="o")
    return Case(path, [], {"nm_per_px": NM_PER_PX, "mrad_per_px": mrad, "semiangle_mrad": SEMIANGLE_MRAD},
                writer="emdfile (py4DSTEM layout)")


def _swift_properties(arrays: dict[str, typing.Any], reciprocal: bool) -> tuple[dict[str, typing.Any], typing.Any]:
    from nion.data import Calibration, DataAndMetadata
    from nion.swift.model import DataItem
    mrad = float(arrays["mrad_per_px"])
    if reciprocal:  # a camera calibrated in 1/nm: the reader needs the high tension to get mrad
        det = Calibration.Calibration(0.0, mrad / (wavelength_nm(ENERGY_EV) * 1e3), "1/nm")
    else:
        det = Calibration.Calibration(-20 * mrad, mrad, "mrad")
    scan = Calibration.Calibration(0.0, NM_PER_PX, "nm")
    xdata = DataAndMetadata.new_data_and_metadata(
        arrays["data"], dimensional_calibrations=[scan, scan, det, det],
        data_descriptor=DataAndMetadata.DataDescriptor(False, 2, 2),
        metadata={"instrument": {"high_tension": ENERGY_EV, "ConvergenceAngle": SEMIANGLE_MRAD / 1e3}})
    item = DataItem.new_data_item(xdata)
    item.title = "graphene 4D"
    try:
        return item.write_to_dict(), xdata.data
    finally:
        item.close()


def swift_h5(arrays: dict[str, typing.Any], folder: str) -> Case:
    from nion.swift.model import HDF5Handler
    path = os.path.join(folder, "graphene_item.h5")
    properties, data = _swift_properties(arrays, reciprocal=False)
    handler = HDF5Handler.HDF5Handler(path)
    now = datetime.datetime.now()
    handler.write_properties(properties, now)
    handler.write_data(data, now)
    handler.close()
    return Case(path, [], {"nm_per_px": NM_PER_PX, "mrad_per_px": float(arrays["mrad_per_px"]),
                           "semiangle_mrad": SEMIANGLE_MRAD}, writer="Swift HDF5Handler")


def swift_ndata(arrays: dict[str, typing.Any], folder: str) -> Case:
    from nion.swift.model import NDataHandler
    path = os.path.join(folder, "graphene_item.ndata")
    properties, data = _swift_properties(arrays, reciprocal=True)
    handler = NDataHandler.NDataHandler(path)
    now = datetime.datetime.now()
    handler.write_properties(properties, now)
    handler.write_data(data, now)
    handler.close()
    return Case(path, [], {"nm_per_px": NM_PER_PX, "mrad_per_px": float(arrays["mrad_per_px"]),
                           "semiangle_mrad": SEMIANGLE_MRAD}, writer="Swift NDataHandler (camera in 1/nm)")


def _hyperspy_axes(mrad: float) -> list[dict[str, typing.Any]]:
    return [{"scale": NM_PER_PX * 10, "units": "Å", "navigate": True}, {"scale": NM_PER_PX * 10, "units": "Å",
            "navigate": True}, {"scale": mrad, "units": "mrad", "navigate": False},
            {"scale": mrad, "units": "mrad", "navigate": False}]


def hspy(arrays: dict[str, typing.Any], folder: str) -> Case:
    path = os.path.join(folder, "graphene.hspy")
    mrad = float(arrays["mrad_per_px"])
    expect = {"nm_per_px": NM_PER_PX, "mrad_per_px": mrad, "semiangle_mrad": SEMIANGLE_MRAD}
    try:
        import hyperspy.api as hs
    except ImportError:
        hs = None
    if hs is not None:
        signal = hs.signals.Signal2D(arrays["data"])
        for axis in signal.axes_manager.navigation_axes:
            axis.scale, axis.units = NM_PER_PX * 10, "Å"
        for axis in signal.axes_manager.signal_axes:
            axis.scale, axis.units = mrad, "mrad"
        signal.metadata.set_item("Acquisition_instrument.TEM.beam_energy", ENERGY_EV / 1e3)
        signal.metadata.set_item("Acquisition_instrument.TEM.convergence_angle", SEMIANGLE_MRAD)
        signal.save(path, overwrite=True)
        return Case(path, [], expect, writer="hyperspy")
    with h5py.File(path, "w") as file:
        _hyperspy_layout(file, arrays["data"], mrad)
    return Case(path, [], expect, writer="h5py (HyperSpy 3.3 layout)")


def _hyperspy_layout(root: typing.Any, data: numpy.ndarray, mrad: float) -> None:
    root.attrs["file_format"] = "HyperSpy"
    root.attrs["file_format_version"] = "3.3"
    group = root.create_group("Experiments").create_group("__unnamed__")
    group.create_dataset("data", data=data, chunks=(1, 1, *data.shape[2:]))
    for index, axis in enumerate(_hyperspy_axes(mrad)):
        axis_group = group.create_group(f"axis-{index}")
        axis_group.attrs.update({"_type": "UniformDataAxis", "name": "_None_", "offset": 0.0,
                                 "size": int(data.shape[index]), **axis})
    tem = group.create_group("metadata").create_group("Acquisition_instrument").create_group("TEM")
    tem.attrs.update({"beam_energy": ENERGY_EV / 1e3, "convergence_angle": SEMIANGLE_MRAD})


def zspy(arrays: dict[str, typing.Any], folder: str) -> Case:
    """HyperSpy's zspy writer needs zarr < 3; this is its layout (zarr format 2 groups and attributes)."""
    import zarr
    path = os.path.join(folder, "graphene.zspy")
    mrad = float(arrays["mrad_per_px"])
    root = zarr.open_group(path, mode="w", zarr_format=2)
    root.attrs.update({"file_format": "HyperSpy", "file_format_version": "3.3"})
    group = root.create_group("Experiments").create_group("__unnamed__")
    data = arrays["data"]
    group.create_array("data", shape=data.shape, dtype=data.dtype, chunks=(1, 1, *data.shape[2:]))[...] = data
    for index, axis in enumerate(_hyperspy_axes(mrad)):
        group.create_group(f"axis-{index}").attrs.update({"name": "_None_", "offset": 0.0,
                                                          "size": int(data.shape[index]), **axis})
    tem = group.create_group("metadata").create_group("Acquisition_instrument").create_group("TEM")
    tem.attrs.update({"beam_energy": ENERGY_EV / 1e3, "convergence_angle": SEMIANGLE_MRAD})
    return Case(path, [], {"nm_per_px": NM_PER_PX, "mrad_per_px": mrad, "semiangle_mrad": SEMIANGLE_MRAD},
                writer="zarr (HyperSpy zspy layout)")


def _counts(arrays: dict[str, typing.Any]) -> numpy.ndarray:
    return numpy.round(arrays["data"] * COUNTS).astype(numpy.uint16)


def mib(arrays: dict[str, typing.Any], folder: str) -> Case:
    """Quantum Detectors Merlin: per frame a 384-byte ASCII header, then big-endian U16 pixels, rows bottom-up."""
    path = os.path.join(folder, "graphene.mib")
    frames = _counts(arrays).reshape(-1, *arrays["data"].shape[2:])
    height, width = frames.shape[1:]
    with open(path, "wb") as file:
        for index, frame in enumerate(frames):
            header = (f"MQ1,{index + 1:06d},00384,01,{width:04d},{height:04d},U16,   1x1,01,"
                      "2026-11-30 12:00:00.000000,0.001000,0,0,0,1.200000E+2,5.110000E+2,0.000000E+0,"
                      "0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,3RX,175,511,000,000,000,"
                      "000,000,000,125,255,125,125,100,100,082,100,087,030,128,004,255,129,128,176,168,511,511,"
                      "MQ1A,2026-11-30T12:00:00.000000000Z,1000000ns,12,")
            file.write(header.encode("ascii").ljust(384, b"\0"))
            file.write(frame[::-1].astype(">u2").tobytes())  # rows bottom-up, as the camera writes them
    flags = ["--scan-shape", "32,32", "--mrad-per-px", str(float(arrays["mrad_per_px"])), "--nm-per-px",
             str(NM_PER_PX), "--semiangle-mrad", str(SEMIANGLE_MRAD)]
    return Case(path, flags, {}, scale=COUNTS, writer="raw bytes (Merlin U16 layout)")


def empad(arrays: dict[str, typing.Any], folder: str) -> Case:
    """EMPAD: float32 frames of 130 x 128 (128 x 128 pixels + 2 metadata rows) and an .xml naming the scan."""
    data = arrays["data"]
    scan_y, scan_x, det_y, det_x = data.shape
    raw = numpy.zeros((scan_y, scan_x, 130, 128), dtype="<f4")
    raw[:, :, :det_y, :det_x] = data
    raw[:, :, 128:] = 7.0  # metadata rows the reader must drop
    raw_name = f"scan_x{scan_x}_y{scan_y}.raw"
    raw.tofile(os.path.join(folder, raw_name))
    fov_m = NM_PER_PX * 1e-9 * scan_x
    xml = (f"<root><raw_file filename=\"{raw_name}\"/><pix_x>{scan_x}</pix_x><pix_y>{scan_y}</pix_y>"
           f"<iom_measurements><optics><get_full_scan_field_of_view>({fov_m!r}, {fov_m!r})"
           "</get_full_scan_field_of_view></optics></iom_measurements></root>")
    path = os.path.join(folder, "acquisition.xml")
    with open(path, "w") as file:
        file.write(xml)
    vacuum = numpy.zeros((128, 128), dtype=numpy.float32)  # the vacuum pattern recorded on the same camera
    vacuum[:det_y, :det_x] = arrays["reference"]
    numpy.save(os.path.join(folder, "vacuum.npy"), vacuum)
    return Case(os.path.join(folder, raw_name), ["--mrad-per-px", str(float(arrays["mrad_per_px"])),
                                                 "--semiangle-mrad", str(SEMIANGLE_MRAD),
                                                 "--reference", os.path.join(folder, "vacuum.npy")],
                {"nm_per_px": NM_PER_PX}, writer="raw bytes + xml (EMPAD layout)")


def dm4(arrays: dict[str, typing.Any], folder: str) -> Case:
    """Gatan DM4 written by nionswift-io's DM writer (read back through rosettasciio)."""
    from nion.data import Calibration, DataAndMetadata
    from nionswift_plugin.DM_IO import dm3_image_utils
    mrad = float(arrays["mrad_per_px"])
    scan = Calibration.Calibration(0.0, NM_PER_PX, "nm")
    det = Calibration.Calibration(0.0, mrad, "mrad")
    xdata = DataAndMetadata.new_data_and_metadata(arrays["data"], dimensional_calibrations=[scan, scan, det, det],
                                                  data_descriptor=DataAndMetadata.DataDescriptor(False, 2, 2))
    path = os.path.join(folder, "graphene.dm4")
    with open(path, "wb") as file:
        dm3_image_utils.save_image(xdata, file, 4)
    return Case(path, ["--semiangle-mrad", str(SEMIANGLE_MRAD)], {"nm_per_px": NM_PER_PX, "mrad_per_px": mrad},
                writer="nionswift-io DM writer")


def dectris(arrays: dict[str, typing.Any], folder: str) -> Case:
    """NeXus master file whose entry/data/data_00000N are external links to frame files (EIGER / ARINA)."""
    frames = _counts(arrays).reshape(-1, *arrays["data"].shape[2:])
    halves = numpy.array_split(frames, 2)
    for index, part in enumerate(halves, start=1):
        with h5py.File(os.path.join(folder, f"scan_data_{index:06d}.h5"), "w") as file:
            file.create_dataset("entry/data/data", data=part, chunks=(1, *part.shape[1:]))
    path = os.path.join(folder, "scan_master.h5")
    pixel_m, mrad = 100e-6, float(arrays["mrad_per_px"])
    with h5py.File(path, "w") as file:
        for index in range(1, len(halves) + 1):
            file[f"entry/data/data_{index:06d}"] = h5py.ExternalLink(f"scan_data_{index:06d}.h5", "entry/data/data")
        detector = file.create_group("entry/instrument/detector")
        detector["x_pixel_size"] = pixel_m
        detector["y_pixel_size"] = pixel_m
        detector["detector_distance"] = pixel_m / (mrad * 1e-3)
        file["entry/instrument/beam/incident_wavelength"] = wavelength_nm(ENERGY_EV) * 10
    return Case(path, ["--scan-shape", "32,32", "--nm-per-px", str(NM_PER_PX), "--semiangle-mrad",
                       str(SEMIANGLE_MRAD)], {"mrad_per_px": mrad},
                scale=COUNTS, writer="h5py (DECTRIS NeXus master + external links)")


def velox(arrays: dict[str, typing.Any], folder: str) -> Case:
    """Thermo Fisher Velox EMD (no public writer): camera frames as Data/Image/<uuid>/Data (y, x, frame), one
    chunk per frame, JSON metadata as a uint8 column per frame, camera calibrated in 1/nm; rosettasciio reads it."""
    frames = arrays["data"].reshape(-1, *arrays["data"].shape[2:])
    mrad = float(arrays["mrad_per_px"])
    per_nm = mrad / (wavelength_nm(ENERGY_EV) * 1e3)
    per_m = str(float(per_nm * 1e9))
    metadata = {"BinaryResult": {"PixelSize": {"width": per_m, "height": per_m},
                                 "PixelUnitX": "1/m", "PixelUnitY": "1/m", "Offset": {"x": "0", "y": "0"},
                                 "DetectorIndex": "0"},
                "Scan": {"FrameTime": "0.001"},
                "Optics": {"AccelerationVoltage": str(ENERGY_EV), "BeamConvergence": str(SEMIANGLE_MRAD / 1e3)},
                "Detectors": {"Detector-0": {"DetectorName": "Ceta", "ExposureTime": "0.001"}},
                "Core": {"MetadataDefinitionVersion": "7.9", "MetadataSchemaVersion": "v1/2013/07"},
                "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1764500000"}},
                "Instrument": {"InstrumentClass": "Talos", "InstrumentModel": "Talos F200X"}}
    text = numpy.frombuffer(json.dumps(metadata).encode(), dtype="u1")
    path = os.path.join(folder, "graphene_velox.emd")
    with h5py.File(path, "w") as file:
        file.create_dataset("Version", data=numpy.array([json.dumps({"format": "Velox", "version": 11}).encode()]))
        group = file.create_group("Data/Image/6f3c1b2a9d8e4f7a")
        group.create_dataset("Data", data=numpy.moveaxis(frames, 0, -1), chunks=(*frames.shape[1:], 1))
        column = numpy.zeros((len(text) + 16, len(frames)), dtype="u1")
        column[:len(text)] = text[:, None]
        group.create_dataset("Metadata", data=column)
    return Case(path, ["--scan-shape", "32,32", "--nm-per-px", str(NM_PER_PX)],
                {"mrad_per_px": mrad, "semiangle_mrad": SEMIANGLE_MRAD}, writer="h5py (Velox EMD layout)")


def flat_hdf5(arrays: dict[str, typing.Any], folder: str) -> Case:
    path = os.path.join(folder, "frames.h5")
    with h5py.File(path, "w") as file:
        file.create_dataset("frames", data=arrays["data"].reshape(-1, *arrays["data"].shape[2:]))
    flags = ["--scan-shape", "32,32", "--mrad-per-px", str(float(arrays["mrad_per_px"])), "--nm-per-px",
             str(NM_PER_PX), "--semiangle-mrad", str(SEMIANGLE_MRAD)]
    return Case(path, flags, {}, writer="h5py (flat stack)")


WRITERS: dict[str, typing.Callable[[dict[str, typing.Any], str], Case]] = {
    "emd": emd, "swift_h5": swift_h5, "swift_ndata": swift_ndata, "hspy": hspy, "zspy": zspy, "mib": mib,
    "empad": empad, "dm4": dm4, "dectris": dectris, "flat_hdf5": flat_hdf5, "velox": velox,
}
NEEDS = {"zspy": "zarr", "dm4": "rsciio", "velox": "rsciio"}  # optional libraries (extra `io`) a format needs


def to_json(case: Case) -> str:
    return json.dumps(dataclasses.asdict(case))
