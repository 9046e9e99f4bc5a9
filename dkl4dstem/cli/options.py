"""Parsed flags -> the experiment's config and the readers' calibration options."""
from __future__ import annotations

import argparse
import os
import typing

from dkl4dstem.cli.parser import READER_OPTIONS
from dkl4dstem.errors import InputError

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig


def reader_options(args: argparse.Namespace) -> dict[str, typing.Any]:
    """open_replay keywords from the calibration flags."""
    from dkl4dstem.data.readers.base import parse_scan_shape
    options = {name: getattr(args, name, None) for name in READER_OPTIONS}
    options["scan_shape"] = parse_scan_shape(options["scan_shape"])
    return options


def reader_settings(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The calibration flags as the session keeps them for --resume (the reference file as an absolute path)."""
    settings = {name: getattr(args, name, None) for name in READER_OPTIONS}
    reference = settings["reference"]
    if reference and os.path.exists(reference):
        settings["reference"] = os.path.abspath(reference)
    elif reference and ":" in reference:
        path, key = reference.rsplit(":", 1)
        settings["reference"] = f"{os.path.abspath(path)}:{key}"
    return settings


def scalarizer_params(items: list[str]) -> dict[str, float]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--param expects NAME=VALUE, got {item!r}")
        params[name.strip()] = value.strip()
    return typing.cast(dict[str, float], params)


def set_options(args: argparse.Namespace) -> dict[str, typing.Any]:
    """`--set NAME=VALUE` items parsed by each field's type and checked on their own (InputError naming the field);
    a later item wins over an earlier one."""
    from dkl4dstem.config import parse_setting

    return dict(parse_setting(item) for item in getattr(args, "settings", None) or [])


def init_from(args: argparse.Namespace) -> str | None:
    """The earlier run to start from: --set init_from=DIR or --init-from DIR (--set wins), as an absolute path."""
    path = set_options(args).get("init_from", getattr(args, "init_from", None))
    return os.path.abspath(path) if path else None


def experiment_config(args: argparse.Namespace, stored: dict[str, typing.Any] | None) -> ExperimentConfig:
    """Stored settings (resume / init-from), then the flags, then --set; every field checked (InputError)."""
    from dkl4dstem.config import ExperimentConfig

    overrides = set_options(args)
    given = {"scalarizer": args.scalarizer, "window": args.window, "seeds": getattr(args, "seeds", None),
             "steps": getattr(args, "steps", None), "acquisition": getattr(args, "acquisition", None),
             "xi": getattr(args, "xi", None), "beta": getattr(args, "beta", None), "seed": args.seed,
             "map_model": getattr(args, "map_model", None)}
    values = {k: v for k, v in given.items() if v is not None}
    if args.param:
        values["scalarizer_params"] = scalarizer_params(args.param)
    flags = {"minimize": ("maximize", False), "exact_posterior": ("latent_grid", False),
             "noiseless_acquisition": ("observation_noise", False), "no_pretrain": ("pretrain", False)}
    values.update(setting for flag, setting in flags.items() if getattr(args, flag, None))
    if "init_from" in overrides or getattr(args, "init_from", None):
        values["init_from"] = init_from(args)
        overrides.pop("init_from", None)
    config = ExperimentConfig.from_settings(stored or {}, **{**values, **overrides})
    config.validate_fields()
    return config
