"""Results in users' formats (maps.npz, results.emd that emdfile / py4DSTEM open), honest printed summary,
figures that leave the user's matplotlib backend alone, and a CLI whose --help and input errors load no torch."""
from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy
import pytest

from dkl4dstem.cli import main

NM_PER_PX, MRAD_PER_PX = 0.05, 1.9780733654635356


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, graphene_path_module: str):
    out = tmp_path_factory.mktemp("results") / "run"
    args = ["run", graphene_path_module, "--out", str(out), "--seeds", "5", "--steps", "6", "--window", "8",
            "--seed", "2"]
    print("dkl4dstem", *args)
    import contextlib
    import io
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    (out / "printed.txt").write_text(printed.getvalue())
    return out


@pytest.fixture(scope="module")
def graphene_path_module() -> str:
    import os
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "graphene_si.npz")


def test_maps_npz_has_exactly_the_issue_keys(run_dir) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    with numpy.load(run_dir / "maps.npz") as maps:
        assert set(maps.files) == {"prediction", "uncertainty", "acquisition", "measured", "truth"}
        for key in ("prediction", "uncertainty", "acquisition", "truth"):
            assert maps[key].shape == (32, 32) and maps[key].dtype.kind == "f", key
        assert maps["measured"].dtype == bool
        assert sorted(map(tuple, numpy.argwhere(maps["measured"]).tolist())) == sorted(map(tuple, summary["visited"]))
        assert numpy.isfinite(maps["prediction"]).all() and (maps["uncertainty"] > 0).all()
        assert maps["truth"].max() == pytest.approx(summary["truth_best_value"])


def test_results_emd_holds_maps_points_patterns_and_calibrations(run_dir) -> None:
    import emdfile
    summary = json.loads((run_dir / "summary.json").read_text())
    root = emdfile.read(str(run_dir / "results.emd"))
    names = set(root.treekeys)
    assert {"survey", "prediction", "uncertainty", "acquisition", "truth", "measured_mask", "measured",
            "patterns"} <= names
    points = root.tree("measured").data
    numpy.testing.assert_array_equal(numpy.stack([points["y"], points["x"]], axis=1), summary["visited"])
    numpy.testing.assert_allclose(points["value"], summary["values"])
    assert list(points["phase"]) == [0] * 5 + [1] * 6
    with numpy.load(run_dir / "maps.npz") as maps:
        numpy.testing.assert_allclose(root.tree("prediction").data, maps["prediction"])
    with h5py.File(run_dir / "session.h5", "r") as session:
        numpy.testing.assert_array_equal(root.tree("patterns").data, session["points/pattern"][()])
    calibration = root.metadata["dkl4dstem"]
    assert calibration["R_pixel_size"] == pytest.approx(NM_PER_PX) and calibration["R_pixel_units"] == "nm"
    assert calibration["Q_pixel_size"] == pytest.approx(MRAD_PER_PX) and calibration["Q_pixel_units"] == "mrad"
    assert calibration["convergence_semiangle_mrad"] == pytest.approx(30.0)
    dims = root.tree("prediction").dims
    assert dims[1][1] - dims[1][0] == pytest.approx(NM_PER_PX)
    assert json.loads(calibration["summary_json"])["scalarizer"] == "com_magnitude"


def test_py4dstem_opens_the_results(run_dir) -> None:
    py4DSTEM = pytest.importorskip("py4DSTEM", reason="py4DSTEM pins numpy<2; install it in its own environment")
    root = py4DSTEM.read(str(run_dir / "results.emd"))
    numpy.testing.assert_array_equal(root.tree("measured_mask").data.astype(bool),
                                     numpy.load(run_dir / "maps.npz")["measured"])
    assert root.tree("patterns").data.shape == (11, 41, 41)
    assert root.metadata["dkl4dstem"]["Q_pixel_units"] == "mrad"


def test_printed_summary_is_honest_about_dose_seeds_and_map_error(run_dir) -> None:
    printed = (run_dir / "printed.txt").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    print(printed)
    assert summary["dose_fraction"] == pytest.approx((11 + 0.01 * 1024) / 1024)
    assert "including the survey" in printed and "5 random seeds + 6 DKL steps" in printed
    assert "first chosen by the model" in printed and f"map NRMSE vs the ground truth: {summary['nrmse']:.3f}" \
        in printed
    assert "survey: survey image from the file" in printed
    assert summary["calibration_sources"]["mrad_per_px"] == "file (mrad_per_px)"
    # the first DKL step at one of the truth's 11 highest positions (1% of 1,024), counted here from the ranks
    truth = numpy.load(run_dir / "maps.npz")["truth"]
    top = {divmod(int(i), truth.shape[1]) for i in numpy.argsort(truth, axis=None)[-11:]}
    steps = [tuple(p) for p, phase in zip(summary["visited"], summary["phases"]) if phase == "step"]
    expected = next((k + 1 for k, position in enumerate(steps) if position in top), None)
    print("first DKL step in the top 1%:", expected)
    assert summary["first_top1_dkl_step"] == expected
    assert ("no DKL step" if expected is None else f"DKL step {expected} (measurement {5 + expected})") in printed


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_and_input_errors_load_neither_torch_nor_matplotlib(tmp_path) -> None:
    out = _python("import sys\nfrom dkl4dstem.cli import main\n"
                  "for argv in (['--help'], ['run', '--help']):\n"
                  "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
                  f"print('EXIT', main(['run', {str(tmp_path / 'missing.h5')!r}, '--out', {str(tmp_path / 'o')!r}]))\n"
                  "heavy = ('torch', 'gpytorch', 'matplotlib', 'scipy')\n"
                  "print('LOADED', sorted(m for m in heavy if m in sys.modules))")
    assert "EXIT 2" in out and "LOADED []" in out
    for name in ("com_magnitude [mrad (px without --mrad-per-px)]", "vadf [a.u.]  params: inner_mrad=auto",
                 "bragg_distance", "--scan-shape", "--reference FILE[:KEY]"):
        assert name in out, name


def test_importing_outputs_and_figures_keeps_the_users_backend() -> None:
    out = _python("import matplotlib\nmatplotlib.use('svg')\nimport dkl4dstem.reports.outputs, dkl4dstem.reports.figures\n"
                  "import numpy\nfrom matplotlib.figure import Figure\n"
                  "f = dkl4dstem.reports.figures.reconstruct_figure(numpy.eye(8), numpy.eye(8), [0.5], [numpy.eye(8)], [0.1],"
                  " 'mrad', 'com_magnitude', nm_per_px=0.05)\n"
                  "print(matplotlib.get_backend(), isinstance(f, Figure), [a.get_label() for a in f.axes][:0])")
    assert out.split()[:2] == ["svg", "True"]


def test_overview_uses_one_colour_range_and_labelled_colorbars(run_dir) -> None:
    from dkl4dstem.reports import figures
    truth = numpy.load(run_dir / "maps.npz")["truth"]
    prediction = truth * 0.5
    final = {"prediction": prediction, "uncertainty": numpy.ones_like(truth), "acquisition": -numpy.arange(
        truth.size, dtype=float).reshape(truth.shape)}
    figure = figures.overview_figure(numpy.ones_like(truth) + numpy.eye(32), [(1, 1)], 1, final, "mrad",
                                     "com_magnitude", truth, survey_name="virtual ADF", nm_per_px=0.05)
    images = [axis.images[0] for axis in figure.axes if axis.images]
    assert images[1].get_clim() == images[4].get_clim() == (float(prediction.min()), float(truth.max()))
    labels = [axis.get_ylabel() for axis in figure.axes if not axis.images]
    assert "com_magnitude (mrad)" in labels and "1 sigma (mrad)" in labels and any("clipped" in t for t in labels)
    assert figure.axes[0].get_title().startswith("virtual ADF")
    assert any(text.get_text().endswith(" nm") for text in figure.axes[0].texts)
