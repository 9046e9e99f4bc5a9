"""`dkl4dstem run | reconstruct | demo`. Bad input: one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import signal
import sys
import textwrap
import threading
import typing

from dkl4dstem import __version__
from dkl4dstem.errors import InputError

if typing.TYPE_CHECKING:  # torch, gpytorch, scipy and matplotlib load only once a run starts: --help is instant
    from dkl4dstem.reports import outputs
    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.experiment.loop import Experiment, ExperimentResult
    from dkl4dstem.instruments.replay import ReplayInstrument
    import numpy

    from dkl4dstem.experiment.session import SessionData, SessionLock


def open_replay(*args: typing.Any, **kwargs: typing.Any) -> ReplayInstrument:
    from dkl4dstem.instruments import replay
    return replay.open_replay(*args, **kwargs)


def read_session(path: str) -> SessionData:
    from dkl4dstem.experiment import session
    return session.read_session(path)


def check_finite(data: typing.Any) -> None:
    from dkl4dstem.evaluation import groundtruth
    groundtruth.check_finite(data)

DEMO_DATA = "graphene_si.npz"
CHECK_FINITE_BYTES = 4 << 30  # larger files are checked pattern by pattern as they are measured


class _Parser(argparse.ArgumentParser):
    """Errors exit 2 with one line; an epilog given as a callable is built only when help is shown."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def _number(kind: type, minimum: float, inclusive: bool) -> typing.Callable[[str], typing.Any]:
    def parse(text: str) -> typing.Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if not math.isfinite(value) or value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if inclusive else '>'} {minimum}")
        return value
    return parse


positive_int = _number(int, 0, inclusive=False)
count = _number(int, 0, inclusive=True)
nonnegative_float = _number(float, 0.0, inclusive=True)
positive_float = _number(float, 0.0, inclusive=False)
READER_OPTIONS = ("scan_shape", "nm_per_px", "mrad_per_px", "semiangle_mrad", "reference")


def _reader_options(args: argparse.Namespace) -> dict[str, typing.Any]:
    """open_replay keywords from the calibration flags."""
    from dkl4dstem.data.readers.base import parse_scan_shape
    options = {name: getattr(args, name, None) for name in READER_OPTIONS}
    options["scan_shape"] = parse_scan_shape(options["scan_shape"])
    return options


def _reader_settings(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The calibration flags as the session keeps them for --resume (the reference file as an absolute path)."""
    settings = {name: getattr(args, name, None) for name in READER_OPTIONS}
    reference = settings["reference"]
    if reference and os.path.exists(reference):
        settings["reference"] = os.path.abspath(reference)
    elif reference and ":" in reference:
        path, key = reference.rsplit(":", 1)
        settings["reference"] = f"{os.path.abspath(path)}:{key}"
    return settings


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scalarizer", default=None, help="builtin name, package.module:function or entry point "
                        "(default com_magnitude)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="scalarizer parameter, e.g. --param outer_mrad=20 (repeatable)")
    parser.add_argument("--window", type=positive_int, default=None, help="HAADF patch width in px (default 12)")
    parser.add_argument("--seed", type=count, default=None, help="random seed (default 0)")
    parser.add_argument("--data-key", default=None, help="dataset path inside an HDF5 file / array name in .npz "
                        "(default: the file's only 4D dataset)")
    files = parser.add_argument_group("calibration (overrides or completes the file's metadata)")
    files.add_argument("--scan-shape", default=None, metavar="Y,X", help="scan of a flat frame stack "
                       "(n, det_y, det_x): DECTRIS/ARINA master, Merlin .mib, EMPAD .raw, 3D .npy / HDF5")
    files.add_argument("--nm-per-px", type=positive_float, default=None, metavar="NM",
                       help="scan step in nm (survey scale bar)")
    files.add_argument("--mrad-per-px", type=positive_float, default=None, metavar="MRAD",
                       help="detector pixel in mrad (angular scalarizers: com_*, bragg_distance, v*f radii)")
    files.add_argument("--semiangle-mrad", type=positive_float, default=None, metavar="MRAD",
                       help="probe convergence semi-angle in mrad (default radii of vbf / vabf / vadf)")
    files.add_argument("--reference", default=None, metavar="FILE[:KEY]", help="vacuum pattern: a 2D array "
                       "(.npy, .npz key, HDF5 dataset, Swift .ndata) or a vacuum scan in any readable format (mean)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: by core count)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dkl4dstem", description="Deep-kernel-learning automated 4D-STEM experiments.")
    parser.add_argument("--version", action="version", version=f"dkl4dstem {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="automated experiment replayed on pre-acquired 4D data",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=typing.cast(str, scalarizer_help))  # imports the scalarizers only for run --help
    run.add_argument("data", nargs="?", help="4D-STEM file (optional with --resume): .npy .npz, HDF5 (.h5 .hdf5, "
                     "py4DSTEM/emdfile .emd, Nion Swift .h5, DECTRIS master), Swift .ndata, HyperSpy .hspy .zspy, "
                     "Merlin .mib, EMPAD .raw/.xml, Gatan .dm3/.dm4 and Velox .emd (extra io)")
    run.add_argument("--out", default=None, help="output folder (summary.json, session.h5, figures)")
    _add_model_options(run)
    run.add_argument("--seeds", type=count, default=None, help="random seed points (default 10; 0 with --init-from)")
    run.add_argument("--steps", type=count, default=None, help="DKL-chosen steps after the seeds (default 100)")
    run.add_argument("--acquisition", choices=("ei", "ucb", "uncertainty", "map"), default=None,
                     help="ei / ucb look for the extreme value; uncertainty measures where sigma is largest; map "
                     "where a measurement lowers the uncertainty summed over the survey most (best map per dose)")
    run.add_argument("--xi", type=nonnegative_float, default=None, help="EI exploration offset (default 0.01)")
    run.add_argument("--beta", type=nonnegative_float, default=None, help="UCB beta (default 4)")
    run.add_argument("--minimize", action="store_true", default=None, help="look for the smallest value")
    run.add_argument("--resume", metavar="DIR", default=None, help="continue the run whose session.h5 is in DIR")
    run.add_argument("--overwrite", action="store_true", help="replace an existing session.h5 in --out")
    run.add_argument("--trust-session-scalarizer", action="store_true",
                     help="on --resume, import the 'module:function' scalarizer named in the session file")
    run.add_argument("--exact-posterior", action="store_true", default=None, help="the GP posterior at every "
                     "candidate even for large surveys (default: on a latent-space grid where that is 8x smaller)")
    run.add_argument("--noiseless-acquisition", action="store_true", default=None,
                     help="EI / UCB on the noiseless latent function (the paper's) instead of the next measurement")
    run.add_argument("--no-truth", action="store_true", help="skip the ground-truth map from all patterns")
    run.add_argument("--survey-dose-ratio", type=nonnegative_float, default=0.01, metavar="R",
                     help="dose of one survey pixel relative to one diffraction pattern, for the printed dose "
                     "(default 0.01: a 10 us HAADF dwell vs a 1 ms camera frame at the same current)")
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


def scalarizer_help() -> str:
    """The scalarizers with their units and parameters, for `run --help`."""
    from dkl4dstem.scalarizers import registry as scalarizers
    lines = ["scalarizers (--scalarizer NAME, parameters with --param NAME=VALUE):"]
    for name in scalarizers.available_scalarizers():
        try:
            item = scalarizers.get_scalarizer(name)
        except Exception as exc:  # a broken third-party entry point must not break --help
            lines.append(f"  {name}: cannot be loaded ({type(exc).__name__})")
            continue
        units = item.units + (" (px without --mrad-per-px)" if item.units == "mrad" else "")
        params = ", ".join(f"{key}={'auto' if math.isnan(value) else f'{value:g}'}"
                           for key, value in item.params.items())
        lines.append(f"  {name} [{units}]" + (f"  params: {params}" if params else "")
                     + ("  (needs --reference)" if item.requires_reference else ""))
        first = re.split(r"\.\s+(?=[A-Z])", (item.description or "").strip())[0].rstrip(".")
        lines += textwrap.wrap(first, width=100, initial_indent="      ", subsequent_indent="      ")
    lines.append("  package.module:function  your own f(pattern, calibration, **params) -> float")
    lines.append("  *_mrad radii: mrad (px without --mrad-per-px); auto = from --semiangle-mrad or the reference disc")
    return "\n".join(lines)


def _params(items: list[str]) -> dict[str, float]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--param expects NAME=VALUE, got {item!r}")
        params[name.strip()] = value.strip()
    return typing.cast(dict[str, float], params)


def _config(args: argparse.Namespace, stored: dict[str, typing.Any] | None) -> ExperimentConfig:
    from dkl4dstem.config import ExperimentConfig
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
    from dkl4dstem.experiment.session import SessionLock

    lock: SessionLock | None = None
    try:
        if args.resume:
            _check_resume_out(args)
            args.out = args.resume
            lock = SessionLock(_session_path(args.resume))  # no other run may append while this one reads
            session = read_session(_session_path(args.resume))
            args.data = args.data or session.settings.get("data")
            args.data_key = args.data_key or session.settings.get("data_key")
            for name in READER_OPTIONS:  # the run continues on the same data with the same calibrations
                if getattr(args, name, None) is None:
                    setattr(args, name, session.settings.get(name))
            _check_trusted_scalarizer(args, session)
        if not args.data:
            raise InputError("run needs a DATA file (or --resume DIR)")
        if not args.out:
            raise InputError("run needs --out DIR")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise InputError(f"--out {args.out} is a file; give a folder for the run's outputs")
        stored = dict(session.settings) if session else {}
        if args.init_from and not session:  # the earlier run's window, scalarizer, network unless given here
            from dkl4dstem.models import transfer
            stored = {k: v for k, v in transfer.read_settings(args.init_from).items() if k in transfer.MODEL_SETTINGS}
        config = _config(args, stored or None)
        return _run(args, config, session)
    finally:
        if lock is not None:
            lock.release()


def _session_path(folder: str) -> str:
    return os.path.join(folder, "session.h5")


def _check_resume_out(args: argparse.Namespace) -> None:
    """`--resume A --out B` would append A's points to B's session, or start a junk one: refused."""
    if args.out is not None and os.path.realpath(args.out) != os.path.realpath(args.resume):
        raise InputError(f"--resume {args.resume} continues the run in {args.resume}, but --out names "
                         f"{args.out}: leave out --out (a resumed run writes where it started)")
    if not os.path.isfile(_session_path(args.resume)):
        raise InputError(f"cannot read session file {_session_path(args.resume)}: no such file")


def _check_trusted_scalarizer(args: argparse.Namespace, session: SessionData) -> None:
    """A session file may come from anyone: its 'module:function' scalarizer is imported only if the user names it
    again on the command line, or passes --trust-session-scalarizer."""
    from dkl4dstem.scalarizers.registry import runs_user_code

    stored = str(session.settings.get("scalarizer", ""))
    if runs_user_code(stored) and args.scalarizer is None and not args.trust_session_scalarizer:
        raise InputError(f"the session names the scalarizer {stored!r}, which would import and run that code; "
                         f"name it again with --scalarizer {stored} (or pass --trust-session-scalarizer)")


def _prepare_out(out: str, overwrite: bool) -> SessionLock:
    """Lock the output folder before anything in it is opened for writing; with --overwrite clear the old run's
    outputs (summary first) so a run killed midway never leaves an old summary beside a new session."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    from dkl4dstem.experiment.session import SessionLock

    lock = SessionLock(_session_path(out))
    try:
        if os.path.exists(_session_path(out)) and not overwrite:
            raise InputError(f"{_session_path(out)} exists: continue it with --resume {out}, or pass --overwrite")
        if overwrite:
            for name in ("summary.json", "overview.png", "steps.png", "maps.npz", "results.emd", "session.h5"):
                path = os.path.join(out, name)
                if os.path.exists(path):
                    os.remove(path)
    except OSError as exc:
        lock.release()
        raise InputError(f"cannot replace the old outputs in {out}: {exc.strerror or exc}") from None
    except BaseException:
        lock.release()
        raise
    return lock


def _run(args: argparse.Namespace, config: ExperimentConfig, session: SessionData | None) -> int:
    """Checks before dose, the lock of a new run's folder, the run, its outputs."""
    from dkl4dstem.experiment import preflight
    from dkl4dstem.scalarizers.registry import get_scalarizer
    from dkl4dstem.experiment.session import data_fingerprint

    instrument = open_replay(args.data, args.data_key, **_reader_options(args))
    own_lock: SessionLock | None = None
    try:
        if instrument.data.nbytes <= CHECK_FINITE_BYTES:
            check_finite(instrument.data)
        survey = instrument.survey()
        config.validate(survey.shape)
        preflight.check_before_dose(get_scalarizer(config.scalarizer, **config.scalarizer_params),
                                    instrument.calibration(), instrument.detector_shape)
        if config.init_from:  # a bad model is refused here, before any dose (the experiment checks it again)
            from dkl4dstem.models.transfer import load_transfer
            load_transfer(config.init_from, config)
        fingerprint = data_fingerprint(instrument.data)
        if session is None:
            own_lock = _prepare_out(args.out, args.overwrite)
        from dkl4dstem.reports import outputs
        from dkl4dstem.experiment.loop import Experiment

        recorder = outputs.RunRecorder(config)
        experiment = Experiment(instrument, config, session_path=_session_path(args.out), on_event=recorder,
                                resume=session, session_settings={"data": os.path.abspath(args.data),
                                                                  "data_key": args.data_key,
                                                                  "data_fingerprint": fingerprint,
                                                                  **_reader_settings(args)})
        with instrument.held_open():  # the experiment closes its instrument; the truth still reads the file
            result = _run_interruptible(experiment, recorder)
            summary = _write_outputs(args, survey.image, config, result, recorder, instrument)
    finally:
        instrument.close()
        if own_lock is not None:
            own_lock.release()
    if summary is not None:
        outputs.print_summary(summary, sys.stdout)
    if result.error:
        print(f"dkl4dstem: run stopped early: {result.error}", file=sys.stderr)
        return 1
    return 0 if summary is not None else 1


def _write_outputs(args: argparse.Namespace, survey: numpy.ndarray, config: ExperimentConfig,
                   result: ExperimentResult, recorder: outputs.RunRecorder,
                   instrument: typing.Any) -> dict[str, typing.Any] | None:
    """summary.json first, then the ground truth and the figures. A signal (Ctrl-C, SIGTERM, SIGHUP) cuts the
    ground truth short; while the summary and the figures are written it is held until they are done."""
    from dkl4dstem.reports import outputs

    signals = _PostRunSignals()
    try:
        with signals:
            summary = outputs.write_run_outputs(args.out, survey, config, result, recorder, None,
                                                data_path=args.data, instrument=instrument,
                                                survey_dose_ratio=args.survey_dose_ratio,
                                                with_figures=args.no_truth)
            if args.no_truth:
                return summary
            truth = signals.interruptible(lambda: outputs.truth_for(instrument, config, dask=args.dask))
            if truth is None:
                print("dkl4dstem: ground truth interrupted; summary.json has the run without it", file=sys.stderr)
            return outputs.write_run_outputs(args.out, survey, config, result, recorder, truth,
                                              data_path=args.data, instrument=instrument,
                                              survey_dose_ratio=args.survey_dose_ratio)
    except OSError as exc:
        print(f"dkl4dstem: could not write the outputs in {args.out} ({exc.strerror or exc}); every measured "
              "point is in session.h5", file=sys.stderr)
        return None


class _PostRunSignals:
    """Stop signals after the run: raise KeyboardInterrupt inside `interruptible` work, otherwise note them."""

    def __init__(self) -> None:
        self.raising = False
        self.previous: dict[int, typing.Any] = {}

    def _on_signal(self, signum: int, frame: typing.Any) -> None:
        if self.raising:
            raise KeyboardInterrupt

    def __enter__(self) -> _PostRunSignals:
        self.previous = _install(self._on_signal)
        return self

    def __exit__(self, *exc: typing.Any) -> None:
        _restore(self.previous)

    def interruptible(self, work: typing.Callable[[], typing.Any]) -> typing.Any:
        """`work()`, or None when a signal cut it short."""
        self.raising = True
        try:
            return work()
        except KeyboardInterrupt:
            return None
        finally:
            self.raising = False


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _install(handler: typing.Callable[[int, typing.Any], None]) -> dict[int, typing.Any]:
    if not _main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def _restore(previous: dict[int, typing.Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _run_interruptible(experiment: Experiment, recorder: outputs.RunRecorder) -> ExperimentResult:
    """First Ctrl-C (or SIGTERM / SIGHUP) stops after the current point (everything measured is in session.h5); a
    second one aborts."""
    def on_signal(signum: int, frame: typing.Any) -> None:
        if experiment.stopped:
            raise KeyboardInterrupt
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\ndkl4dstem: {name}: stopping after the current point (Ctrl-C again to abort)", file=sys.stderr)
        experiment.stop()

    previous = _install(on_signal)
    try:
        return experiment.run()
    finally:
        recorder.close()
        _restore(previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from dkl4dstem.reports import outputs
    from dkl4dstem.experiment import preflight
    from dkl4dstem.evaluation.reconstruct import reconstruct
    from dkl4dstem.scalarizers.registry import get_scalarizer
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    except ValueError:
        raise InputError(f"--fractions must be comma-separated numbers, got {args.fractions!r}") from None
    if not fractions:
        raise InputError("--fractions is empty")
    config = _config(argparse.Namespace(**{**vars(args), "seeds": None, "steps": None, "acquisition": None,
                                           "xi": None, "beta": None, "minimize": None,
                                           "exact_posterior": None, "noiseless_acquisition": None}), None)
    instrument = open_replay(args.data, args.data_key, **_reader_options(args))
    try:
        survey = instrument.survey()
        if config.window >= min(survey.shape):
            raise InputError(f"window {config.window} must be smaller than the survey {survey.shape}")
        preflight.check_before_dose(get_scalarizer(config.scalarizer, **config.scalarizer_params),
                                    instrument.calibration(), instrument.detector_shape)
        truth = outputs.truth_for(instrument, config, dask=args.dask)
    finally:
        instrument.close()
    results = reconstruct(survey.image, truth, fractions, window=config.window, seed=config.seed,
                          iterations=args.iterations, config=config, progress=lambda m: print(m, file=sys.stderr))
    outputs.write_reconstruct_outputs(args.out, survey.image, truth, config, results, instrument.calibration(),
                                      instrument)
    for item in results:
        print(f"fraction {item.fraction:g}: {item.n_points} points, NRMSE {item.nrmse:.4f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dkl4dstem.reports import outputs

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
