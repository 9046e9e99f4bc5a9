"""The experiment loop on replayed abTEM data: events, session file, stop, masks, reproducibility."""
from __future__ import annotations

import importlib.util
import pathlib
import threading

import h5py
import numpy
import pytest
import scipy.optimize
import scipy.stats

from dkl4dstem.experiment import Experiment, ExperimentConfig, StepEvent
from dkl4dstem.instruments.replay import open_replay
from dkl4dstem.scalarizers import get_scalarizer

FAST = dict(initial_iterations=60, update_iterations=10, refit_every=10, refit_iterations=40)


class ClosingReplay:
    """The real replay instrument, remembering whether the loop closed it."""

    def __init__(self, path: str) -> None:
        self.inner = open_replay(path)
        self.closed = 0
        self.detector_shape = self.inner.detector_shape

    def survey(self):  # type: ignore[no-untyped-def]
        return self.inner.survey()

    def calibration(self):  # type: ignore[no-untyped-def]
        return self.inner.calibration()

    def measure(self, y: int, x: int):  # type: ignore[no-untyped-def]
        return self.inner.measure(y, x)

    def close(self) -> None:
        self.closed += 1
        self.inner.close()


def test_loop_measures_unique_points_records_everything_and_reports_maps(graphene_path: str, tmp_path) -> None:
    instrument = ClosingReplay(graphene_path)
    events: list[StepEvent] = []
    # random seed points (no pre-training, tested in test_pretrain.py): the fit check below is of the bookkeeping
    config = ExperimentConfig(scalarizer="com_magnitude", seeds=6, steps=14, pretrain=False, **FAST)
    result = Experiment(instrument, config, session_path=str(tmp_path / "s.h5"), on_event=events.append).run()
    assert result.error is None and instrument.closed == 1
    assert len(result.visited) == 20 == len(set(result.visited)) == len(events)
    assert [e.phase for e in events] == ["seed"] * 6 + ["step"] * 14
    data = numpy.load(graphene_path)
    scalarizer = get_scalarizer("com_magnitude")
    calibration = instrument.calibration()
    expected = [scalarizer(data["data"][y, x], calibration) for y, x in result.visited]
    numpy.testing.assert_allclose(result.values, expected, rtol=1e-6)
    for previous, event in zip(events[6:], events[7:]):
        assert event.position == previous.next_position  # the loop measured what it chose
    last = events[-1]
    assert last.prediction.shape == last.uncertainty.shape == last.acquisition.shape == (32, 32)
    assert last.units == "mrad" and last.next_position is None
    measured = numpy.array([[y, x] for y, x in result.visited])
    # the posterior follows the data where it measured
    fitted = last.prediction[measured[:, 0], measured[:, 1]]
    assert numpy.mean(numpy.abs(fitted - result.values)) < 0.5 * numpy.std(result.values)
    assert numpy.all(last.uncertainty > 0)
    assert len(result.decision_seconds) == len(result.step_seconds) == 14  # per DKL step
    assert all(s >= 0 for s in result.decision_seconds) and len(result.instrument_seconds) == 20
    with h5py.File(tmp_path / "s.h5", "r") as file:
        numpy.testing.assert_array_equal(file["points/position"][()], measured)
        numpy.testing.assert_allclose(file["points/value"][()], result.values)
        numpy.testing.assert_array_equal(file["points/pattern"][3], data["data"][tuple(measured[3])])


@pytest.mark.parametrize("observation_noise", [True, False])
def test_expected_improvement_is_taken_on_the_next_measurement(graphene_path: str, observation_noise: bool) -> None:
    """EI map == closed-form EI with the latent variance plus one constant (the noise); none without the option."""
    events: list[StepEvent] = []
    posteriors: list[tuple[numpy.ndarray, numpy.ndarray]] = []
    config = ExperimentConfig(scalarizer="com_magnitude", seeds=8, steps=3, observation_noise=observation_noise,
                              steer="dkl", **FAST)  # EI on the DKL's posterior throughout (steering: test_steering)

    def record(event: StepEvent) -> None:
        events.append(event)
        run = experiment._current  # the acquisition's own posterior (the event's maps are the map model's)
        if event.phase == "step" and run is not None and run.posterior is not None:
            predictive = run.posterior.predict(run.points.training_values())
            posteriors.append((predictive.mean.numpy(), predictive.latent_variance.numpy()))

    experiment = Experiment(open_replay(graphene_path), config, on_event=record)
    result = experiment.run()
    assert result.error is None
    event = events[-2]  # a step whose maps chose a next position
    values = numpy.asarray(result.values[:event.n_measured])
    target_mean, target_std = values.mean(), values.std()
    mean, latent_variance = posteriors[-2]
    best = (values.max() - target_mean) / target_std + config.xi

    def log_ei(extra_variance: float) -> numpy.ndarray:
        sigma = numpy.sqrt(latent_variance + extra_variance)
        z = (mean - best) / sigma
        return numpy.log(sigma * (z * scipy.stats.norm.cdf(z) + scipy.stats.norm.pdf(z)))

    acquisition = event.acquisition.ravel()
    usable = acquisition > numpy.quantile(acquisition, 0.5)  # away from log-space underflow in the closed form
    # the one constant that explains the best candidate's value, then every other candidate must agree with it
    top = int(numpy.argmax(acquisition))
    noise = scipy.optimize.brentq(lambda c: log_ei(c)[top] - acquisition[top], 0.0, 10.0) \
        if log_ei(0.0)[top] < acquisition[top] else 0.0
    numpy.testing.assert_allclose(log_ei(noise)[usable], acquisition[usable], atol=2e-3)
    if observation_noise:
        assert noise > 1e-4  # the trained noise (>= the likelihood's 1e-4 floor) is in the variance
    else:
        assert noise < 1e-6  # none (the root finder's rounding at most), far below the likelihood's 1e-4 floor


def test_stop_takes_effect_within_one_step_and_closes_the_instrument(graphene_path: str) -> None:
    instrument = ClosingReplay(graphene_path)
    config = ExperimentConfig(seeds=5, steps=40, **FAST)
    experiment: Experiment

    def stop_at_step_8(event: StepEvent) -> None:
        if event.step == 8:
            experiment.stop()

    experiment = Experiment(instrument, config, on_event=stop_at_step_8)
    result = experiment.run()
    assert result.stopped and len(result.visited) == 9 and instrument.closed == 1


def test_pause_rests_the_instrument_once_and_resume_measures_on(graphene_path: str) -> None:
    """A pause calls the instrument's optional rest() once, on the loop's thread, before waiting (the Swift
    instrument parks the probe and stops the camera there); nothing is measured while paused; resume goes on."""
    instrument = ClosingReplay(graphene_path)
    rests: list[int] = list()
    instrument.rest = lambda: rests.append(len(measured))  # type: ignore[attr-defined]
    measured: list[int] = list()
    experiment: Experiment

    def pause_at_step_6(event: StepEvent) -> None:
        measured.append(event.step)
        if event.step == 6:
            experiment.pause()
            threading.Timer(0.5, resume_checked).start()

    def resume_checked() -> None:
        paused_count.append(len(measured))
        experiment.resume()

    paused_count: list[int] = list()
    experiment = Experiment(instrument, ExperimentConfig(seeds=5, steps=6, **FAST), on_event=pause_at_step_6)
    result = experiment.run()
    assert rests == [7]  # once, after step 6's event (steps count from 0), before the next measurement
    assert paused_count == [7]  # nothing measured during the pause
    assert len(result.visited) == 11 and not result.stopped


def test_stop_from_another_thread_during_seeding(graphene_path: str) -> None:
    instrument = ClosingReplay(graphene_path)
    started = threading.Event()
    original = instrument.measure

    def slow_measure(y: int, x: int):  # type: ignore[no-untyped-def]
        started.set()
        threading.Event().wait(0.05)
        return original(y, x)

    instrument.measure = slow_measure  # type: ignore[method-assign]
    experiment = Experiment(instrument, ExperimentConfig(seeds=200, steps=0, **FAST))
    thread = threading.Thread(target=experiment.run)
    thread.start()
    assert started.wait(30)
    experiment.stop()
    thread.join(5)
    assert not thread.is_alive() and instrument.closed == 1


def test_exclusion_mask_and_minimize_are_respected(graphene_path: str) -> None:
    mask = numpy.zeros((32, 32), dtype=bool)
    mask[:, :16] = True  # the left half is off limits (e.g. a hole or a region already exposed)
    config = ExperimentConfig(scalarizer="vbf", seeds=5, steps=10, maximize=False, acquisition="ucb", **FAST)
    result = Experiment(open_replay(graphene_path), config, exclude_mask=mask).run()
    assert all(x >= 16 for _, x in result.visited)
    assert result.best_value == pytest.approx(min(result.values))


def test_same_seed_same_run(graphene_path: str) -> None:
    config = ExperimentConfig(seeds=5, steps=6, **FAST)
    first = Experiment(open_replay(graphene_path), config).run()
    second = Experiment(open_replay(graphene_path), config).run()
    assert first.visited == second.visited
    third = Experiment(open_replay(graphene_path), ExperimentConfig(seeds=5, steps=6, seed=1, **FAST)).run()
    assert third.visited[:5] != first.visited[:5]


def test_peer_benchmark_starts_from_the_loops_seed_points(graphene_path: str) -> None:
    """benchmarks/peers.py (its own venv, cannot import dkl4dstem) must seed exactly as the loop, or the
    sample-efficiency comparison starts the peers from other points than ours (it did until 2026-11-29)."""
    spec = importlib.util.spec_from_file_location("peers", pathlib.Path(__file__).parents[1] / "benchmarks" / "peers.py")
    assert spec is not None and spec.loader is not None
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    for seed in (0, 3):  # random seed points: without pre-training (with it, all but the first are spread)
        config = ExperimentConfig(seeds=10, steps=0, seed=seed, pretrain=False)
        result = Experiment(open_replay(graphene_path), config).run()
        expected = [y * 32 + x for y, x in result.visited]
        assert [int(i) for i in peers.seed_indices(32 * 32, 10, seed)] == expected


def test_large_survey_runs_on_the_latent_grid(monkeypatch) -> None:
    """>= 32,768 positions: the loop's posterior is computed on a latent grid and interpolated to every position."""
    from dkl4dstem.instruments.replay import ReplayInstrument
    from dkl4dstem.posterior.latentgrid import LatentGrid

    size = 192  # 36,864 positions
    yy, xx = numpy.mgrid[0:size, 0:size]
    survey = numpy.cos(2 * numpy.pi * xx / 6.0) * numpy.cos(2 * numpy.pi * yy / 6.0)
    data = numpy.ones((size, size, 5, 5), numpy.float32)
    data[:, :, 2, 4] += (survey + 1.0).astype(numpy.float32)  # the centre of mass moves with the local structure
    grids: list[object] = []
    build = LatentGrid.build
    monkeypatch.setattr(LatentGrid, "build", lambda *args, **kwargs: grids.append(build(*args, **kwargs))
                        or grids[-1])
    events: list[StepEvent] = []
    config = ExperimentConfig(scalarizer="com_x", window=6, seeds=10, steps=4, **FAST)
    result = Experiment(ReplayInstrument(data, survey=survey), config, on_event=events.append).run()
    assert grids and all(grid is not None and grid.size <= size * size / 8 for grid in grids)
    assert len(set(result.visited)) == 14
    final = [e for e in events if e.prediction is not None][-1]
    assert final.prediction.shape == (size, size) and numpy.isfinite(final.prediction).all()
    assert numpy.isfinite(final.uncertainty).all() and (final.uncertainty >= 0).all()


def test_force_next_is_measured_next_in_seeding_and_in_steps(graphene_path: str) -> None:
    """A user's forced point (Experiment.force_next from another thread) is the very next measurement."""
    forced_seed, forced_step = (3, 29), (30, 2)
    print("forced points", forced_seed, forced_step)
    experiment: Experiment

    def on_event(event: StepEvent) -> None:
        if event.step == 1:
            experiment.force_next(*forced_seed)  # during seeding
        if event.step == 7:
            experiment.force_next(*forced_step)  # during the DKL steps

    config = ExperimentConfig(scalarizer="vbf", seeds=5, steps=6, **FAST)
    experiment = Experiment(open_replay(graphene_path), config, on_event=on_event)
    result = experiment.run()
    assert result.visited[2] == forced_seed and result.phases[2] == "seed"
    assert result.visited[8] == forced_step and result.phases[8] == "step"
    assert len(result.visited) == 11 and len(set(result.visited)) == 11
    assert experiment.forced_measured == [forced_seed, forced_step]


def test_force_next_refuses_points_outside_or_already_measured(graphene_path: str) -> None:
    from dkl4dstem.errors import InputError
    experiment: Experiment
    problems: list[str] = []

    def on_event(event: StepEvent) -> None:
        if event.step == 0:
            for y, x in ((32, 0), (-1, 3), event.position):
                try:
                    experiment.force_next(y, x)
                except InputError as exc:
                    problems.append(str(exc))

    experiment = Experiment(open_replay(graphene_path), ExperimentConfig(seeds=3, steps=0, **FAST), on_event=on_event)
    result = experiment.run()
    assert len(problems) == 3 and "outside" in problems[0] and "already measured" in problems[2]
    assert experiment.forced_measured == [] and len(result.visited) == 3
