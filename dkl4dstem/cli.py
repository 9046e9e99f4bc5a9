"""`dkl4dstem run | reconstruct | demo`. Bad input: one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import typing

import numpy

from dkl4dstem import __version__
from dkl4dstem.config import ExperimentConfig
from dkl4dstem.errors import InputError
from dkl4dstem.groundtruth import check_finite
from dkl4dstem.replay import open_replay
from dkl4dstem.session import SessionData, read_session

if typing.TYPE_CHECKING:  # torch, gpytorch and matplotlib load only once the input has been checked
    from dkl4dstem import outputs
    from dkl4dstem.experiment import Experiment, ExperimentResult

DEMO_DATA = "graphene_si.npz"
CHECK_FINITE_BYTES = 4 << 30  # larger files are checked pattern by pattern as they are measured


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind: type, minimum: float, inclusive: bool) -> typing.Callable[[str], typing.Any]:
    def parse(text: str) -> typing.Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if not numpy.isfinite(value) or value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if inclusive else '>'} {minimum}")
        return value
    return parse


positive_int = _number(int, 0, inclusive=False)
count = _number(int, 0, inclusive=True)
nonnegative_float = _number(float, 0.0, inclusive=True)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scalarizer", default=None, help="builtin name, package.module:function or entry point "
                        "(default com_magnitude)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="scalarizer parameter, e.g. --param outer_mrad=20 (repeatable)")
    parser.add_argument("--window", type=positive_int, default=None, help="HAADF patch width in px (default 12)")
    parser.add_argument("--seed", type=count, default=None, help="random seed (default 0)")
    parser.add_argument("--data-key", default=None, help="dataset path inside an HDF5 file / array name in .npz")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: by core count)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dkl4dstem", description="Deep-kernel-learning automated 4D-STEM experiments.")
    parser.add_argument("--version", action="version", version=f"dkl4dstem {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="automated experiment replayed on pre-acquired 4D data")
    run.add_argument("data", nargs="?", help=".npy / .npz / .h5 4D-STEM data (optional with --resume)")
    run.add_argument("--out", default=None, help="output folder (summary.json, session.h5, figures)")
    _add_model_options(run)
    run.add_argument("--seeds", type=count, default=None, help="random seed points (default 10; 0 with --init-from)")
    run.add_argument("--steps", type=count, default=None, help="DKL-chosen steps after the seeds (default 100)")
    run.add_argument("--acquisition", choices=("ei", "ucb", "uncertainty"), default=None)
    run.add_argument("--xi", type=nonnegative_float, default=None, help="EI exploration offset (default 0.01)")
    run.add_argument("--beta", type=nonnegative_float, default=None, help="UCB beta (default 4)")
    run.add_argument("--minimize", action="store_true", default=None, help="look for the smallest value")
    run.add_argument("--resume", metavar="DIR", default=None, help="continue the run whose session.h5 is in DIR")
    run.add_argument("--overwrite", action="store_true", help="replace an existing session.h5 in --out")
    run.add_argument("--exact-posterior", action="store_true", default=None, help="the GP posterior at every "
                     "candidate even for large surveys (default: on a latent-space grid where that is 8x smaller)")
    run.add_argument("--noiseless-acquisition", action="store_true", default=None,
                     help="EI / UCB on the noiseless latent function (the paper's) instead of the next measurement")
    run.add_argument("--no-truth", action="store_true", help="skip the ground-truth map from all patterns")
    run.add_argument("--no-pretrain", action="store_true", default=None,
                     help="no self-supervised pre-training of the network on the survey before the first fit")
    run.add_argument("--init-from", metavar="DIR", default=None, help="start from the model and points of an "
                     "earlier run (its output directory or session.h5), e.g. the same sample in another region")
    run.add_argument("--dask", nargs="?", const=True, default=None, metavar="SCHEDULER",
                     help="compute the ground truth on dask (local, or at a scheduler address)")
    rec = sub.add_parser("reconstruct", help="paper Fig. 3: DKL maps from random subsets vs the full-data truth")
    rec.add_argument("data")
    rec.add_argument("--out", required=True)
    _add_model_options(rec)
    rec.add_argument("--fractions", default="1,0.1,0.01,0.001")
    rec.add_argument("--iterations", type=positive_int, default=300, help="training iterations per fraction")
    rec.add_argument("--dask", nargs="?", const=True, default=None, metavar="SCHEDULER")
    demo = sub.add_parser("demo", help="run on the small simulated graphene dataset shipped with the package")
    demo.add_argument("--out", default="dkl4dstem-demo")
    demo.add_argument("--steps", type=count, default=40)
    demo.add_argument("--seed", type=count, default=0)
    demo.add_argument("--threads", type=positive_int, default=None)
    return parser


def _params(items: list[str]) -> dict[str, float]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--param expects NAME=VALUE, got {item!r}")
        params[name.strip()] = value.strip()
    return typing.cast(dict[str, float], params)


def _config(args: argparse.Namespace, stored: dict[str, typing.Any] | None) -> ExperimentConfig:
    fields = {field.name for field in dataclasses.fields(ExperimentConfig)}
    values: dict[str, typing.Any] = {k: v for k, v in (stored or {}).items() if k in fields}
    if "hidden" in values:
        values["hidden"] = tuple(values["hidden"])
    given = {"scalarizer": args.scalarizer, "window": args.window, "seeds": args.seeds, "steps": args.steps,
             "acquisition": args.acquisition, "xi": args.xi, "beta": args.beta, "seed": args.seed}
    values.update({k: v for k, v in given.items() if v is not None})
    if args.param:
        values["scalarizer_params"] = _params(args.param)
    if args.minimize:
        values["maximize"] = False
    if args.exact_posterior:
        values["latent_grid"] = False
    if args.noiseless_acquisition:
        values["observation_noise"] = False
    if getattr(args, "no_pretrain", None):
        values["pretrain"] = False
    if getattr(args, "init_from", None):
        values["init_from"] = os.path.abspath(args.init_from)
    return ExperimentConfig(**values)


def cmd_run(args: argparse.Namespace) -> int:
    session: SessionData | None = None
    if args.resume:
        session = read_session(os.path.join(args.resume, "session.h5"))
        args.data = args.data or session.settings.get("data")
        args.data_key = args.data_key or session.settings.get("data_key")
        args.out = args.out or args.resume
    if not args.data:
        raise InputError("run needs a DATA file (or --resume DIR)")
    if not args.out:
        raise InputError("run needs --out DIR")
    stored = dict(session.settings) if session else {}
    if args.init_from and not session:  # the earlier run's window, scalarizer, network unless given here
        from dkl4dstem import transfer
        stored = {k: v for k, v in transfer.read_settings(args.init_from).items() if k in transfer.MODEL_SETTINGS}
    config = _config(args, stored or None)
    instrument = open_replay(args.data, args.data_key)
    try:
        if instrument.data.nbytes <= CHECK_FINITE_BYTES:
            check_finite(instrument.data)
        survey = instrument.survey()
        config.validate(survey.shape)
        if config.init_from:  # a bad model is refused here, before any dose (the experiment checks it again)
            from dkl4dstem.transfer import load_transfer
            load_transfer(config.init_from, config)
        os.makedirs(args.out, exist_ok=True)
        session_path = os.path.join(args.out, "session.h5")
        if session is None and os.path.exists(session_path) and not args.overwrite:
            raise InputError(f"{session_path} exists: continue it with --resume {args.out}, or pass --overwrite")
        from dkl4dstem import outputs
        from dkl4dstem.experiment import Experiment

        recorder = outputs.RunRecorder(config)
        experiment = Experiment(instrument, config, session_path=session_path, on_event=recorder, resume=session,
                                session_settings={"data": os.path.abspath(args.data), "data_key": args.data_key})
        result = _run_interruptible(experiment, recorder)
        truth = None if args.no_truth else outputs.truth_for(instrument, config, dask=args.dask)
        summary = outputs.write_run_outputs(args.out, survey.image, config, result, recorder, truth,
                                            data_path=args.data)
    finally:
        instrument.close()
    outputs.print_summary(summary, sys.stdout)
    if result.error:
        print(f"dkl4dstem: run stopped early: {result.error}", file=sys.stderr)
        return 1
    return 0


def _run_interruptible(experiment: Experiment, recorder: outputs.RunRecorder) -> ExperimentResult:
    """First Ctrl-C stops after the current point (everything measured is in session.h5); a second one aborts."""
    def on_sigint(signum: int, frame: typing.Any) -> None:
        if experiment.stopped:
            raise KeyboardInterrupt
        print("\ndkl4dstem: stopping after the current point (Ctrl-C again to abort)", file=sys.stderr)
        experiment.stop()

    previous = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    try:
        return experiment.run()
    finally:
        recorder.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from dkl4dstem import outputs
    from dkl4dstem.reconstruct import reconstruct
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    except ValueError:
        raise InputError(f"--fractions must be comma-separated numbers, got {args.fractions!r}") from None
    if not fractions:
        raise InputError("--fractions is empty")
    config = _config(argparse.Namespace(**{**vars(args), "seeds": None, "steps": None, "acquisition": None,
                                           "xi": None, "beta": None, "minimize": None,
                                           "exact_posterior": None, "noiseless_acquisition": None}), None)
    instrument = open_replay(args.data, args.data_key)
    try:
        survey = instrument.survey()
        if config.window >= min(survey.shape):
            raise InputError(f"window {config.window} must be smaller than the survey {survey.shape}")
        truth = outputs.truth_for(instrument, config, dask=args.dask)
    finally:
        instrument.close()
    results = reconstruct(survey.image, truth, fractions, window=config.window, seed=config.seed,
                          iterations=args.iterations, config=config, progress=lambda m: print(m, file=sys.stderr))
    outputs.write_reconstruct_outputs(args.out, survey.image, truth, config, results, instrument.calibration())
    for item in results:
        print(f"fraction {item.fraction:g}: {item.n_points} points, NRMSE {item.nrmse:.4f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dkl4dstem import outputs

    data = outputs.resource_path(DEMO_DATA)
    print(f"dkl4dstem demo: {os.path.basename(data)} (abTEM-simulated Si-doped graphene), figures in {args.out}/")
    run_args = build_parser().parse_args(["run", data, "--out", args.out, "--steps", str(args.steps),
                                          "--seed", str(args.seed), "--overwrite"])
    run_args.threads = args.threads
    return cmd_run(run_args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        os.environ["DKL4DSTEM_THREADS"] = str(args.threads)  # applied when torch is first used
    commands = {"run": cmd_run, "reconstruct": cmd_reconstruct, "demo": cmd_demo}
    try:
        return commands[args.command](args)
    except InputError as exc:
        print(f"dkl4dstem: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dkl4dstem: aborted; every measured point is in session.h5", file=sys.stderr)
        return 130
    except Exception as exc:  # never a bare traceback for the user; --debug shows it
        if args.debug:
            raise
        print(f"dkl4dstem: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
