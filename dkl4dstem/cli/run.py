"""`dkl4dstem run` and `dkl4dstem demo`: checks before any dose, the output folder's lock, the run, its outputs."""
from __future__ import annotations

import argparse
import os
import sys
import typing

from dkl4dstem.cli.options import experiment_config, init_from, reader_options, reader_settings
from dkl4dstem.cli.parser import READER_OPTIONS, build_parser
from dkl4dstem.cli.signals import PostRunSignals, run_interruptible
from dkl4dstem.errors import InputError

if typing.TYPE_CHECKING:  # torch, gpytorch, scipy and matplotlib load only once a run starts: --help is instant
    import numpy

    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.experiment.loop import ExperimentResult
    from dkl4dstem.session.store import SessionData, SessionLock
    from dkl4dstem.instruments.replay import ReplayInstrument
    from dkl4dstem.reports.progress import RunRecorder

DEMO_DATA = "graphene_si.npz"
CHECK_FINITE_BYTES = 4 << 30  # larger files are checked pattern by pattern as they are measured
REPLACED_OUTPUTS = ("summary.json", "overview.png", "steps.png", "maps.npz", "results.emd", "session.h5")


def open_replay(*args: typing.Any, **kwargs: typing.Any) -> ReplayInstrument:
    from dkl4dstem.instruments import replay
    return replay.open_replay(*args, **kwargs)


def cmd_run(args: argparse.Namespace) -> int:
    session: SessionData | None = None
    from dkl4dstem.session.lock import SessionLock
    from dkl4dstem.session.store import read_session

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
        config = experiment_config(args, _stored_settings(args, session))
        return _run(args, config, session)
    finally:
        if lock is not None:
            lock.release()


def _stored_settings(args: argparse.Namespace, session: SessionData | None) -> dict[str, typing.Any] | None:
    """A resumed run's settings; with --init-from the earlier run's window, scalarizer and network unless given
    here."""
    if session is not None:
        return dict(session.settings)
    earlier = init_from(args)
    if not earlier:
        return None
    from dkl4dstem.models import transfer
    return {k: v for k, v in transfer.read_settings(earlier).items() if k in transfer.MODEL_SETTINGS}
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
    from dkl4dstem.session.lock import SessionLock

    lock = SessionLock(_session_path(out))
    try:
        if os.path.exists(_session_path(out)) and not overwrite:
            raise InputError(f"{_session_path(out)} exists: continue it with --resume {out}, or pass --overwrite")
        if overwrite:
            for name in REPLACED_OUTPUTS:
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
    from dkl4dstem.evaluation.groundtruth import check_finite
    from dkl4dstem.experiment import preflight
    from dkl4dstem.session.checksums import data_fingerprint
    from dkl4dstem.scalarizers.registry import get_scalarizer

    instrument = open_replay(args.data, args.data_key, **reader_options(args))
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
        from dkl4dstem.experiment.loop import Experiment
        from dkl4dstem.reports.progress import RunRecorder

        recorder = RunRecorder(config)
        experiment = Experiment(instrument, config, session_path=_session_path(args.out), on_event=recorder,
                                resume=session, session_settings={"data": os.path.abspath(args.data),
                                                                  "data_key": args.data_key,
                                                                  "data_fingerprint": fingerprint,
                                                                  **reader_settings(args)})
        with instrument.held_open():  # the experiment closes its instrument; the truth still reads the file
            result = run_interruptible(experiment, recorder)
            summary = _write_outputs(args, survey.image, config, result, recorder, instrument)
    finally:
        instrument.close()
        if own_lock is not None:
            own_lock.release()
    if summary is not None:
        from dkl4dstem.reports.printing import print_summary
        print_summary(summary, sys.stdout)
    if result.error:
        print(f"dkl4dstem: run stopped early: {result.error}", file=sys.stderr)
        return 1
    return 0 if summary is not None else 1


def _write_outputs(args: argparse.Namespace, survey: numpy.ndarray, config: ExperimentConfig,
                   result: ExperimentResult, recorder: RunRecorder,
                   instrument: typing.Any) -> dict[str, typing.Any] | None:
    """summary.json first, then the ground truth and the figures. A signal (Ctrl-C, SIGTERM, SIGHUP) cuts the
    ground truth short; while the summary and the figures are written it is held until they are done."""
    from dkl4dstem.reports import outputs, progress

    signals = PostRunSignals()
    try:
        with signals:
            summary = outputs.write_run_outputs(args.out, survey, config, result, recorder, None,
                                                data_path=args.data, instrument=instrument,
                                                survey_dose_ratio=args.survey_dose_ratio,
                                                with_figures=args.no_truth)
            if args.no_truth:
                return summary
            truth = signals.interruptible(lambda: progress.truth_for(instrument, config, dask=args.dask))
            if truth is None:
                print("dkl4dstem: ground truth interrupted; summary.json has the run without it", file=sys.stderr)
            return outputs.write_run_outputs(args.out, survey, config, result, recorder, truth,
                                              data_path=args.data, instrument=instrument,
                                              survey_dose_ratio=args.survey_dose_ratio)
    except OSError as exc:
        print(f"dkl4dstem: could not write the outputs in {args.out} ({exc.strerror or exc}); every measured "
              "point is in session.h5", file=sys.stderr)
        return None


def cmd_demo(args: argparse.Namespace) -> int:
    from dkl4dstem.reports import outputs

    data = outputs.resource_path(DEMO_DATA)
    print(f"dkl4dstem demo: {os.path.basename(data)} (abTEM-simulated Si-doped graphene), figures in {args.out}/")
    run_args = build_parser().parse_args(["run", data, "--out", args.out, "--steps", str(args.steps),
                                          "--seed", str(args.seed), "--overwrite"])
    run_args.threads = args.threads
    return cmd_run(run_args)


