"""Behaviour pinned across refactorings: short replays against a recorded fixture, and the two ways to fit."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy
import pytest
import torch

from dkl4dstem.config import ExperimentConfig
from dkl4dstem.data.patches import extract_patches
from dkl4dstem.models import fit as fitting
from dkl4dstem.models.trainer import BackgroundTrainer

RESOURCES = pathlib.Path(__file__).resolve().parents[1] / "resources"
RECORDED = json.loads((RESOURCES / "behaviour_replay.json").read_text())


def fixture_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_behaviour_fixture", RESOURCES / "make_behaviour_fixture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_a_short_replay_measures_what_was_recorded(name: str) -> None:
    """Same data, same config, same seed: the same points in the same order, the same values and maps as recorded
    by resources/make_behaviour_fixture.py (regenerate it only for an intended change of behaviour)."""
    recorded = RECORDED[name]
    print(name, recorded["data"], recorded["config"])
    got = fixture_script().run_case(recorded["data"], recorded["config"])
    assert got["visited"] == recorded["visited"]
    assert got["phases"] == recorded["phases"]
    numpy.testing.assert_allclose(got["values"], recorded["values"], rtol=1e-12)
    assert got["prediction_sum"] == pytest.approx(recorded["prediction_sum"], rel=1e-9)
    assert got["uncertainty_sum"] == pytest.approx(recorded["uncertainty_sum"], rel=1e-9)


def test_the_synchronous_fit_is_the_trainers_fit() -> None:
    """`models.fit.fit` (reconstruct) and `BackgroundTrainer.fit_now` (the loop's first fit) give one posterior."""
    rng = numpy.random.default_rng(4)
    survey = rng.random((20, 20))
    patches = extract_patches(survey, 6)
    indices = [int(i) for i in rng.permutation(400)[:30]]
    values = [float(v) for v in survey.reshape(-1)[indices] ** 2]
    values[3] = float("nan")  # an unusable value is left out by both
    print("indices", indices)
    config = ExperimentConfig(window=6, seeds=30, steps=0, seed=2)
    direct = fitting.fit(patches, indices, values, config, iterations=30)
    trainer = BackgroundTrainer(patches, config)
    trainer.fit_now(indices, values, iterations=30)
    threaded = trainer.take_result(wait=True)
    trainer.close()
    assert direct.posterior is not None and threaded is not None and direct.failures == trainer.failures == []
    finite = numpy.array([v for v in values if numpy.isfinite(v)])
    a, b = direct.posterior.predict(finite), threaded.predict(finite)
    torch.testing.assert_close(a.mean_in_units(), b.mean_in_units(), rtol=0, atol=0)
    torch.testing.assert_close(a.variance_in_units(True), b.variance_in_units(True), rtol=0, atol=0)
    assert direct.posterior.loo_scale == threaded.loo_scale and direct.posterior.refit and threaded.refit
