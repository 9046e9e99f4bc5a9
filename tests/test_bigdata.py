"""Replay of files larger than memory: streamed .npy with bounded RSS, chunked / dask ground truth."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy
import pytest

from dkl4dstem.data.bigfile import NpyPatterns
from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.evaluation.groundtruth import ground_truth_map
from dkl4dstem.instruments.replay import ReplayInstrument, open_replay
from dkl4dstem.scalarizers import get_scalarizer


def test_streamed_npy_equals_the_array(graphene_path: str, tmp_path) -> None:
    arrays = numpy.load(graphene_path)
    path = tmp_path / "data.npy"
    numpy.save(path, arrays["data"])
    instrument = open_replay(str(path))
    assert isinstance(instrument.data, NpyPatterns)
    numpy.testing.assert_array_equal(instrument.measure(5, 30).pattern, arrays["data"][5, 30])
    numpy.testing.assert_array_equal(instrument.data[3:7], arrays["data"][3:7])
    numpy.testing.assert_array_equal(instrument.data[(slice(30, 32), slice(None), slice(1, 4), slice(None))],
                                     arrays["data"][30:32, :, 1:4, :])
    in_memory = ReplayInstrument(arrays["data"])
    numpy.testing.assert_allclose(instrument.survey().image, in_memory.survey().image, rtol=1e-5)
    instrument.close()


def test_ground_truth_chunked_and_on_dask_agree(graphene_path: str, tmp_path) -> None:
    pytest.importorskip("distributed")
    arrays = numpy.load(graphene_path)
    path = tmp_path / "data.npy"
    numpy.save(path, arrays["data"])
    calibration = DetectorCalibration(arrays["reference"], float(arrays["mrad_per_px"]),
                                      float(arrays["semiangle_mrad"]))
    scalarizer = get_scalarizer("com_magnitude")
    data = arrays["data"]  # NpzFile members decompress on every access: read once
    direct = numpy.array([[scalarizer(data[y, x], calibration) for x in range(32)] for y in range(32)])
    instrument = open_replay(str(path))
    numpy.testing.assert_allclose(ground_truth_map(instrument.data, scalarizer, calibration), direct, rtol=1e-9)
    numpy.testing.assert_allclose(ground_truth_map(instrument.data, scalarizer, calibration, dask=True), direct,
                                  rtol=1e-9)
    import distributed  # a scheduler address (`--dask ADDRESS`): the chunks run on that cluster's workers
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client, distributed.get_task_stream(client) as task_stream:
            on_cluster = ground_truth_map(instrument.data, scalarizer, calibration, dask=cluster.scheduler_address)
    numpy.testing.assert_allclose(on_cluster, direct, rtol=1e-9)
    assert any("scalarize_block" in str(task["key"]) for task in task_stream.data)  # it ran there, not locally
    instrument.close()


@pytest.mark.slow
def test_a_pass_over_a_large_npy_keeps_rss_bounded(tmp_path) -> None:
    """600 MB file; a full pass (virtual survey) may not add more than a fraction of it to the peak RSS."""
    path = tmp_path / "big.npy"
    data = numpy.lib.format.open_memmap(path, mode="w+", dtype=numpy.float32, shape=(96, 96, 128, 128))
    rng = numpy.random.default_rng(0)
    for y in range(96):
        data[y] = rng.random((96, 128, 128), dtype=numpy.float32)
    data.flush()
    del data
    script = textwrap.dedent(f"""
        import resource
        from dkl4dstem.instruments.replay import open_replay
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        instrument = open_replay({str(path)!r})
        image = instrument.survey().image
        pattern = instrument.measure(95, 95).pattern
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(image.shape, pattern.shape, (after - before) // 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    growth_mb = int(proc.stdout.split()[-1])
    assert proc.stdout.startswith("(96, 96) (128, 128)")
    assert growth_mb < 250, f"RSS grew by {growth_mb} MB over a 600 MB pass"
