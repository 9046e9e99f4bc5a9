"""`dkl4dstem reconstruct`: paper Fig. 3, DKL maps from random subsets against the truth from every pattern."""
from __future__ import annotations

import argparse
import sys

from dkl4dstem.cli.options import experiment_config, reader_options
from dkl4dstem.errors import InputError


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from dkl4dstem.evaluation.reconstruct import reconstruct
    from dkl4dstem.experiment import preflight
    from dkl4dstem.instruments.replay import open_replay
    from dkl4dstem.reports import outputs, progress
    from dkl4dstem.scalarizers.registry import get_scalarizer
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    except ValueError:
        raise InputError(f"--fractions must be comma-separated numbers, got {args.fractions!r}") from None
    if not fractions:
        raise InputError("--fractions is empty")
    config = experiment_config(args, None)
    instrument = open_replay(args.data, args.data_key, **reader_options(args))
    try:
        survey = instrument.survey()
        if config.window >= min(survey.shape):
            raise InputError(f"window {config.window} must be smaller than the survey {survey.shape}")
        preflight.check_before_dose(get_scalarizer(config.scalarizer, **config.scalarizer_params),
                                    instrument.calibration(), instrument.detector_shape)
        truth = progress.truth_for(instrument, config, dask=args.dask)
    finally:
        instrument.close()
    results = reconstruct(survey.image, truth, fractions, window=config.window, seed=config.seed,
                          iterations=args.iterations, config=config, progress=lambda m: print(m, file=sys.stderr))
    outputs.write_reconstruct_outputs(args.out, survey.image, truth, config, results, instrument.calibration(),
                                      instrument)
    for item in results:
        print(f"fraction {item.fraction:g}: {item.n_points} points, NRMSE {item.nrmse:.4f}")
    return 0
