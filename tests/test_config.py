"""ExperimentConfig is the one definition of every run setting: each bad value is refused with one line naming the
field, and `dkl4dstem run --set NAME=VALUE` reaches every field."""
from __future__ import annotations

import dataclasses
import math
import os
import typing

import pytest

from dkl4dstem.cli import main
from dkl4dstem.config import FIELD_NAMES, RULES, ExperimentConfig, parse_setting
from dkl4dstem.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "resources", "graphene_si.npz")

# (field, bad value): every field at least once; types (bool given as int and back, text for numbers), ranges,
# NaN / inf, empty tuples and texts, unknown choices.
BAD: list[tuple[str, typing.Any]] = [
    ("scalarizer", ""), ("scalarizer", 3), ("scalarizer", "no_such_scalarizer"),
    ("scalarizer_params", {"radius": 3.0}), ("scalarizer_params", [1.0]), ("scalarizer_params", {1: 2.0}),
    ("window", 0), ("window", -3), ("window", 2.5), ("window", True), ("window", "12"),
    ("seeds", -1), ("seeds", 0), ("seeds", 1.0), ("seeds", False),
    ("steps", -1), ("steps", math.nan), ("steps", None),
    ("acquisition", "greedy"), ("acquisition", ""), ("acquisition", None),
    ("xi", -0.1), ("xi", math.nan), ("xi", math.inf), ("xi", "0.01"), ("xi", True),
    ("beta", -1.0), ("beta", math.inf),
    ("observation_noise", 1), ("observation_noise", "yes"),
    ("maximize", 0), ("maximize", None),
    ("seed", -1), ("seed", 2 ** 64), ("seed", 0.5),
    ("latent_dim", 0), ("latent_dim", True),
    ("hidden", ()), ("hidden", (0,)), ("hidden", (64, -1)), ("hidden", (64.0,)), ("hidden", (True,)), ("hidden", 64),
    ("learning_rate", 0.0), ("learning_rate", -0.01), ("learning_rate", math.nan),
    ("initial_iterations", 0), ("initial_iterations", 10.0),
    ("update_iterations", -1),
    ("refit_every", 0), ("refit_every", False),
    ("refit_iterations", -1),
    ("refit_from_initial", 1),
    ("refit_growth", -0.2), ("refit_growth", math.inf),
    ("wait_for_training", "false"),
    ("latent_grid", 0),
    ("max_retries", -1), ("max_retries", 1.5),
    ("max_consecutive_failures", 0), ("max_consecutive_failures", -2),
    ("device", "gpu"), ("device", ""), ("device", 0),
    ("checkpoint_every", 0), ("checkpoint_every", -25),
    ("measure_timeout_s", 0.0), ("measure_timeout_s", -1.0), ("measure_timeout_s", math.inf), ("measure_timeout_s", True),
    ("pretrain", 1),
    ("init_from", ""), ("init_from", 3),
    ("map_model", "gp"), ("map_model", None),
    ("steer", "survey"), ("steer", True),
]


def test_every_field_has_one_rule_and_a_bad_value_tested() -> None:
    assert set(RULES) == set(FIELD_NAMES)
    assert {name for name, _ in BAD} == set(FIELD_NAMES)


@pytest.mark.parametrize("name, value", BAD, ids=[f"{n}={v!r}" for n, v in BAD])
def test_validate_refuses_a_bad_value_with_one_line_naming_the_field(name: str, value: typing.Any) -> None:
    config = dataclasses.replace(ExperimentConfig(), **{name: value})
    with pytest.raises(InputError) as caught:
        config.validate((64, 64))
    message = str(caught.value)
    print(name, repr(value), "->", message)
    assert name in message and "\n" not in message


@pytest.mark.parametrize("values", [
    {}, {"xi": 0, "beta": 0.0, "steps": 0, "update_iterations": 0, "refit_iterations": 0, "max_retries": 0},
    {"seeds": 0, "init_from": "/some/earlier/run"}, {"device": "cuda:1"}, {"device": "cpu"}, {"hidden": [8]},
    {"measure_timeout_s": 2}, {"scalarizer": "vbf", "scalarizer_params": {"outer_mrad": "20"}}, {"seed": 2 ** 64 - 1},
])
def test_validate_accepts_good_values(values: dict[str, typing.Any]) -> None:
    ExperimentConfig(**values).validate((64, 64))


def test_validate_checks_against_the_survey() -> None:
    with pytest.raises(InputError, match="window 16 must be smaller than the survey 16x16"):
        ExperimentConfig(window=16).validate((16, 16))
    with pytest.raises(InputError, match="seeds \\+ steps = 110 is more than the 100 candidate"):
        ExperimentConfig(window=4).validate((10, 10))


@pytest.mark.parametrize("item, expected", [
    ("window=8", ("window", 8)), ("xi=0.5", ("xi", 0.5)), ("beta=2", ("beta", 2.0)),
    ("maximize=false", ("maximize", False)), ("latent_grid=Yes", ("latent_grid", True)), ("pretrain=0", ("pretrain", False)),
    ("hidden=32,16", ("hidden", (32, 16))), ("hidden=128", ("hidden", (128,))),
    ("device=none", ("device", None)), ("measure_timeout_s=", ("measure_timeout_s", None)),
    ("measure_timeout_s=2.5", ("measure_timeout_s", 2.5)), ("acquisition=map", ("acquisition", "map")),
    ("scalarizer_params=inner_mrad=5,outer_mrad=20", ("scalarizer_params", {"inner_mrad": "5", "outer_mrad": "20"})),
    (" checkpoint_every = 5 ", ("checkpoint_every", 5)),
])
def test_parse_setting_reads_each_kind(item: str, expected: tuple[str, typing.Any]) -> None:
    assert parse_setting(item) == expected


@pytest.mark.parametrize("item, words", [
    ("windw=3", ["unknown setting 'windw'", "nearest: window"]),
    ("checkpoint=3", ["unknown setting 'checkpoint'", "checkpoint_every"]),
    ("window", ["expects NAME=VALUE"]), ("window=abc", ["window must be an integer"]),
    ("window=2.5", ["window must be an integer"]), ("window=0", ["window must be a positive integer"]),
    ("hidden=64,x", ["hidden must be integers"]), ("hidden=", ["hidden must be one or more"]),
    ("maximize=maybe", ["maximize must be true or false"]), ("xi=nan", ["xi must be a finite number"]),
    ("steps=none", ["steps must be an integer"]), ("scalarizer_params=5", ["scalarizer_params must be NAME=VALUE"]),
])
def test_parse_setting_refuses_with_one_line(item: str, words: list[str]) -> None:
    with pytest.raises(InputError) as caught:
        parse_setting(item)
    print(item, "->", caught.value)
    assert all(word in str(caught.value) for word in words) and "\n" not in str(caught.value)


@pytest.mark.parametrize("argv, words", [
    (["--set", "checkpoint_every=0"], ["checkpoint_every must be a positive integer"]),
    (["--set", "max_consecutive_failures=0"], ["max_consecutive_failures must be a positive integer"]),
    (["--set", "hidden=0"], ["hidden must be one or more positive layer widths"]),
    (["--set", "windw=3"], ["unknown setting 'windw'", "nearest: window"]),
    (["--set", "seeds=0"], ["seeds must be a positive integer", "--init-from"]),
])
def test_cli_set_refuses_before_opening_anything(argv: list[str], words: list[str], tmp_path: typing.Any,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    assert main(["run", FIXTURE, "--out", out, *argv]) == 2
    err = capsys.readouterr().err.strip()
    print(err)
    assert len(err.splitlines()) == 1 and all(word in err for word in words)
    assert not os.path.exists(out)


@pytest.mark.slow
def test_cli_set_reaches_the_engine_and_the_session(tmp_path: typing.Any, capsys: pytest.CaptureFixture[str]) -> None:
    """--set values are the run's: the session file records them, a later --set wins over an earlier one and over
    the flag, and a resume keeps them."""
    from dkl4dstem.session.store import read_session

    out = str(tmp_path / "run")
    argv = ["run", FIXTURE, "--out", out, "--seeds", "4", "--steps", "2", "--no-truth", "--set", "hidden=16,16",
            "--set", "initial_iterations=20", "--set", "checkpoint_every=1", "--set", "steps=5", "--set", "steps=3",
            "--set", "maximize=false", "--set", "measure_timeout_s=30"]
    assert main(argv) == 0, capsys.readouterr().err
    settings = read_session(os.path.join(out, "session.h5")).settings
    assert settings["hidden"] == [16, 16] and settings["initial_iterations"] == 20
    assert settings["checkpoint_every"] == 1 and settings["steps"] == 3 and settings["maximize"] is False
    assert settings["measure_timeout_s"] == 30.0
    assert main(["run", "--resume", out, "--no-truth", "--set", "steps=4"]) == 0, capsys.readouterr().err
    session = read_session(os.path.join(out, "session.h5"))
    assert len(session.positions) == 8 and session.settings["hidden"] == [16, 16]


def test_map_model_flag_reaches_the_session_and_refuses_unknown_models(tmp_path: typing.Any,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from dkl4dstem.session.store import read_session

    out = str(tmp_path / "run")
    argv = ["run", FIXTURE, "--out", out, "--seeds", "4", "--steps", "2", "--no-truth", "--map-model", "dkl",
            "--set", "initial_iterations=20"]
    assert main(argv) == 0, capsys.readouterr().err
    assert read_session(os.path.join(out, "session.h5")).settings["map_model"] == "dkl"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", FIXTURE, "--out", str(tmp_path / "other"), "--map-model", "gpax"])
    assert exit_info.value.code == 2
    assert "--map-model" in capsys.readouterr().err
