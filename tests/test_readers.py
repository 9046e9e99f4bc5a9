"""Every reader on a small file written by the format's own library (see format_writers.py): the patterns, the
calibrations and where each came from; then `dkl4dstem run` on it with the ground truth on."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy
import pytest

from dkl4dstem.cli import main
from dkl4dstem.errors import InputError
from dkl4dstem.instruments.replay import open_replay
import format_writers
from format_writers import NEEDS, WRITERS, Case

PROBES = [(0, 0), (5, 7), (31, 30), (16, 16)]


@pytest.fixture(scope="module")
def arrays(graphene_path: str) -> dict[str, numpy.ndarray]:
    with numpy.load(graphene_path) as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="module")
def graphene_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "graphene_si.npz")


def _write(name: str, arrays: dict[str, numpy.ndarray], folder: str) -> Case:
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{name} needs {NEEDS[name]} (pip install -e '.[io]')")
    case = WRITERS[name](arrays, folder)
    print(f"{name}: {case.writer} -> {os.path.basename(case.path)} {case.args}")
    return case


def _options(args: list[str]) -> dict[str, object]:
    options: dict[str, object] = {}
    for flag, value in zip(args[::2], args[1::2]):
        key = flag.lstrip("-").replace("-", "_")
        options[key] = tuple(int(v) for v in value.split(",")) if key == "scan_shape" else \
            value if key == "reference" else float(value)
    return options


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_reader_returns_the_patterns_and_the_files_calibrations(name: str, arrays, tmp_path) -> None:
    case = _write(name, arrays, str(tmp_path))
    instrument = open_replay(case.path, **_options(case.args))
    try:
        assert instrument.scan_shape == (32, 32)
        det_y, det_x = arrays["data"].shape[2:]
        for y, x in PROBES:
            expected = arrays["data"][y, x] * case.scale
            pattern = instrument.measure(y, x).pattern[:det_y, :det_x]
            numpy.testing.assert_allclose(pattern, numpy.round(expected) if case.scale != 1 else expected,
                                          rtol=1e-6, atol=1e-6)
        rows = numpy.asarray(instrument.data[3:5])  # the chunked passes (virtual ADF, ground truth) read rows
        numpy.testing.assert_allclose(rows[1, 7, :det_y, :det_x], instrument.measure(4, 7).pattern[:det_y, :det_x])
        calibration = instrument.calibration()
        found = {"nm_per_px": instrument.nm_per_px, "mrad_per_px": calibration.mrad_per_px,
                 "semiangle_mrad": calibration.semiangle_mrad}
        sources = instrument.calibration_sources
        print(found, sources)
        for key, value in case.expect.items():
            assert found[key] == pytest.approx(value, rel=1e-6), key
            assert not sources[key].startswith(("--", "unknown")), sources[key]
        for key in set(found) - set(case.expect):  # not in the file: from a flag, else unknown
            assert sources[key].startswith("--" if key in _options(case.args) else "unknown"), sources[key]
    finally:
        instrument.close()


def test_flags_override_the_file_and_the_summary_says_so(arrays, tmp_path) -> None:
    case = format_writers.swift_h5(arrays, str(tmp_path))
    reference = tmp_path / "vacuum.npy"
    numpy.save(reference, arrays["reference"])
    instrument = open_replay(case.path, mrad_per_px=2.5, reference=str(reference))
    try:
        assert instrument.calibration().mrad_per_px == 2.5
        assert instrument.calibration_sources["mrad_per_px"].startswith("--mrad-per-px (file said 1.978")
        assert instrument.calibration_sources["reference"] == f"--reference {reference}"
        numpy.testing.assert_array_equal(instrument.calibration().reference, arrays["reference"])
        assert instrument.nm_per_px == pytest.approx(format_writers.NM_PER_PX)
    finally:
        instrument.close()


def test_reference_from_an_hdf5_key_and_from_a_vacuum_scan(arrays, tmp_path) -> None:
    import h5py
    path = tmp_path / "refs.h5"
    with h5py.File(path, "w") as file:
        file["vacuum/pattern"] = arrays["reference"]
        file["other"] = numpy.zeros((3, 3))
    case = format_writers.flat_hdf5(arrays, str(tmp_path))
    with_key = open_replay(case.path, scan_shape=(32, 32), reference=f"{path}:vacuum/pattern")
    numpy.testing.assert_array_equal(with_key.calibration().reference, arrays["reference"])
    with_key.close()
    vacuum = tmp_path / "vacuum_scan.npy"  # a 2 x 2 scan of the vacuum pattern: its mean is the reference
    numpy.save(vacuum, numpy.broadcast_to(arrays["reference"], (2, 2, *arrays["reference"].shape)))
    averaged = open_replay(case.path, scan_shape=(32, 32), reference=str(vacuum))
    numpy.testing.assert_allclose(averaged.calibration().reference, arrays["reference"], rtol=1e-6)
    averaged.close()


@pytest.mark.parametrize("bad, message", [
    (["--scan-shape", "33,32"], "needs 1056 frames"), (["--scan-shape", "a,b"], "--scan-shape expects Y,X"),
    (["--reference", "missing.npy"], "no such file"), (["--mrad-per-px", "-1"], "must be > 0"),
])
def test_bad_calibration_flags_are_one_line_errors(bad: list[str], message: str, arrays, tmp_path, capsys) -> None:
    case = format_writers.flat_hdf5(arrays, str(tmp_path))
    args = ["--scan-shape", "32,32"] + bad if bad[0] != "--scan-shape" else bad
    try:
        code = main(["run", case.path, "--out", str(tmp_path / "o"), *args])
    except SystemExit as exc:  # argparse refuses a malformed number itself
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err


def test_missing_scan_shape_and_missing_linked_file_are_explained(arrays, tmp_path) -> None:
    case = format_writers.flat_hdf5(arrays, str(tmp_path))
    with pytest.raises(InputError, match="--scan-shape"):
        open_replay(case.path)
    case = format_writers.dectris(arrays, str(tmp_path))
    os.remove(tmp_path / "scan_data_000002.h5")
    with pytest.raises(InputError, match="missing data file"):
        open_replay(case.path, scan_shape=(32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_cli_run_on_each_format_with_the_ground_truth(name: str, arrays, tmp_path) -> None:
    case = _write(name, arrays, str(tmp_path))
    out = tmp_path / "out"
    assert main(["run", case.path, "--out", str(out), "--seeds", "4", "--steps", "2", "--window", "8", "--seed",
                 "0", *case.args]) == 0
    summary = json.loads((out / "summary.json").read_text())
    truth = numpy.hypot(*numpy.moveaxis(arrays["abtem_com_mrad"], -1, 0))
    assert summary["units"] == "mrad"
    assert summary["truth_best_value"] == pytest.approx(truth.max(), rel=0.1)
    assert summary["nrmse"] is not None
    assert set(summary["calibration_sources"]) >= {"nm_per_px", "mrad_per_px", "semiangle_mrad", "survey"}
    assert all(v != "unknown" for k, v in summary["calibration_sources"].items() if k != "reference")


@pytest.mark.parametrize("name", ["mib", "empad"])
def test_raw_fixtures_read_the_same_through_rosettasciio(name: str, arrays, tmp_path) -> None:
    """Our pread readers and rosettasciio's agree on the same bytes: the fixtures are the real formats."""
    pytest.importorskip("rsciio", reason="rosettasciio (extra io) cross-checks the raw layouts")
    case = _write(name, arrays, str(tmp_path))
    if name == "mib":
        from rsciio.quantumdetector import file_reader
        theirs = file_reader(case.path, navigation_shape=(32, 32))[0]["data"]
    else:
        from rsciio.empad import file_reader
        theirs = file_reader(str(tmp_path / "acquisition.xml"))[0]["data"]
    ours = open_replay(case.path, **_options(case.args))
    try:
        for y, x in PROBES:
            numpy.testing.assert_array_equal(ours.measure(y, x).pattern, numpy.asarray(theirs[y, x], numpy.float32))
    finally:
        ours.close()
