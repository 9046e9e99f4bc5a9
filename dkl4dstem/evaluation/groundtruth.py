"""Ground truth from every pattern of a replayed dataset, chunk by chunk (bounded memory), optionally on dask."""
from __future__ import annotations

import typing

import numpy

from dkl4dstem.data.bigfile import iter_row_chunks, rows_per_chunk
from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError
from dkl4dstem.experiment.measuring import quiet_scalarizers, scalarize
from dkl4dstem.scalarizers.registry import Scalarizer


def _scalarize_block(block: numpy.ndarray, scalarizer: Scalarizer, calibration: DetectorCalibration) -> numpy.ndarray:
    out = numpy.empty(block.shape[:2], dtype=numpy.float64)
    quiet_scalarizers()  # idempotent; here too for dask workers in other processes
    for y in range(block.shape[0]):
        for x in range(block.shape[1]):
            pattern = numpy.asarray(block[y, x], dtype=numpy.float32)
            try:
                out[y, x] = scalarize(scalarizer, pattern, calibration) if numpy.all(numpy.isfinite(pattern)) \
                    else numpy.nan
            except (Exception, SystemExit):  # a user scalarizer's sys.exit must not end the run here
                out[y, x] = numpy.nan
    return out


def ground_truth_map(data: typing.Any, scalarizer: Scalarizer, calibration: DetectorCalibration, *,
                     dask: str | bool | None = None,
                     progress: typing.Callable[[int], None] | None = None) -> numpy.ndarray:
    """Scalar at every scan position. `dask`: True for a local cluster, or a scheduler address."""
    if dask:
        return _ground_truth_dask(data, scalarizer, calibration, rows_per_chunk(data), dask)
    result = numpy.empty(data.shape[:2], dtype=numpy.float64)
    for start, block in iter_row_chunks(data):
        result[start:start + len(block)] = _scalarize_block(block, scalarizer, calibration)
        if progress is not None:
            progress(len(block))
    return result


def _ground_truth_dask(data: typing.Any, scalarizer: Scalarizer, calibration: DetectorCalibration,
                       chunk_rows: int, dask: str | bool) -> numpy.ndarray:
    """Row chunks as dask tasks: local threads for `--dask`, a distributed cluster for `--dask ADDRESS`."""
    try:
        import dask.array as dask_array  # not `import dask.array`: that would rebind the `dask` argument
    except ImportError:
        raise InputError("--dask needs the 'dask' extra: pip install 'dkl4dstem[dask]'") from None
    array = dask_array.from_array(data, chunks=(chunk_rows, -1, -1, -1))
    mapped = array.map_blocks(_scalarize_block, scalarizer, calibration, drop_axis=(2, 3), dtype=numpy.float64)
    if not isinstance(dask, str):
        return typing.cast(numpy.ndarray, mapped.compute(scheduler="threads"))
    try:
        import distributed
    except ImportError:
        raise InputError("--dask ADDRESS needs the 'dask' extra: pip install 'dkl4dstem[dask]'") from None
    try:
        client = distributed.Client(dask, timeout="20s")
    except OSError as exc:
        raise InputError(f"cannot reach the dask scheduler at {dask}: {exc}") from None
    try:
        return typing.cast(numpy.ndarray, client.compute(mapped).result())
    finally:
        client.close()


def check_finite(data: typing.Any) -> None:
    """Refuse data with NaN/Inf, or with no signal at all, up front (chunk by chunk, bounded memory)."""
    signal = False
    for start, block in iter_row_chunks(data):
        if not numpy.all(numpy.isfinite(block)):
            bad = numpy.argwhere(~numpy.isfinite(block))[0]
            raise InputError(f"data contains NaN/Inf (first at scan position ({start + bad[0]}, {bad[1]}))")
        signal = signal or bool(numpy.any(block))
    if not signal:
        raise InputError("data holds only zeros: no pattern carries any signal")


def nrmse(prediction: numpy.ndarray, truth: numpy.ndarray) -> float:
    """RMSE over all positions divided by the standard deviation of the ground-truth map."""
    valid = numpy.isfinite(truth) & numpy.isfinite(prediction)
    spread = float(numpy.std(truth[valid]))
    return float(numpy.sqrt(numpy.mean((prediction[valid] - truth[valid]) ** 2)) / spread) if spread > 0 else numpy.nan
