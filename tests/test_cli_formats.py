"""`dkl4dstem run` end to end on every readable format, with the ground truth on (computed after the run)."""
from __future__ import annotations

import json
import os

import h5py
import numpy
import pytest

from dkl4dstem.cli import main

RUN = ["--seeds", "4", "--steps", "2", "--window", "8", "--seed", "0"]


def _graphene(graphene_path: str) -> dict[str, numpy.ndarray]:
    with numpy.load(graphene_path) as npz:
        return {name: npz[name] for name in npz.files}


def _run(path: str, out: str, *extra: str) -> dict:
    print("run", path, extra)
    assert main(["run", path, "--out", out, *RUN, *extra]) == 0
    with open(os.path.join(out, "summary.json")) as file:
        return json.load(file)


def _truth_com_px(arrays: dict[str, numpy.ndarray]) -> numpy.ndarray:
    return numpy.hypot(*numpy.moveaxis(arrays["abtem_com_mrad"], -1, 0)) / float(arrays["mrad_per_px"])


def test_npy_run_keeps_the_file_open_for_the_ground_truth(graphene_path: str, tmp_path) -> None:
    arrays = _graphene(graphene_path)
    path = str(tmp_path / "d4.npy")
    numpy.save(path, arrays["data"])
    summary = _run(path, str(tmp_path / "out"))
    assert summary["units"] == "px"  # a bare .npy has no calibration
    assert summary["truth_best_value"] == pytest.approx(_truth_com_px(arrays).max(), rel=0.1)
    assert summary["nrmse"] is not None and (tmp_path / "out" / "overview.png").exists()


@pytest.mark.slow
def test_hdf5_run_finds_the_single_4d_dataset_and_computes_the_truth(graphene_path: str, tmp_path) -> None:
    arrays = _graphene(graphene_path)
    path = str(tmp_path / "d4.h5")
    with h5py.File(path, "w") as file:
        file.create_dataset("experiment/frames", data=arrays["data"], chunks=(1, 1, 41, 41))
        file.create_dataset("experiment/note", data=numpy.arange(3))
    summary = _run(path, str(tmp_path / "out"))
    assert summary["truth_best_value"] == pytest.approx(_truth_com_px(arrays).max(), rel=0.1)
    assert summary["nrmse"] is not None


@pytest.mark.slow
def test_resume_reopens_the_flat_stack_with_the_same_scan_shape_and_calibrations(graphene_path: str,
                                                                                 tmp_path) -> None:
    arrays = _graphene(graphene_path)
    path = str(tmp_path / "frames.h5")
    with h5py.File(path, "w") as file:
        file.create_dataset("frames", data=arrays["data"].reshape(-1, 41, 41))
    out = str(tmp_path / "out")
    flags = ["--scan-shape", "32,32", "--mrad-per-px", str(float(arrays["mrad_per_px"])), "--no-truth"]
    first = _run(path, out, *flags)
    assert first["units"] == "mrad" and first["n_measured"] == 6
    assert main(["run", "--resume", out, "--steps", "4", "--no-truth"]) == 0  # no flags: the session has them
    with open(os.path.join(out, "summary.json")) as file:
        resumed = json.load(file)
    assert resumed["n_measured"] == 8 and resumed["units"] == "mrad"
    assert resumed["visited"][:6] == first["visited"]
    assert resumed["calibration_sources"]["mrad_per_px"] == "--mrad-per-px"
