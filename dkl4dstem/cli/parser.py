"""The command line's flags and help texts (torch-free: `dkl4dstem --help` returns at once)."""
from __future__ import annotations

import argparse
import math
import re
import textwrap
import typing

from dkl4dstem import __version__
from dkl4dstem.config import ACQUISITIONS, DEFAULTS, MAP_MODELS  # stdlib only: --help stays instant

READER_OPTIONS = ("scan_shape", "nm_per_px", "mrad_per_px", "semiangle_mrad", "reference")
DEMO_STEPS = 40  # the demo is a first look at the shipped data: a short run, not the engine's default steps


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


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scalarizer", default=None, help="builtin name, package.module:function or entry point "
                        f"(default {DEFAULTS.scalarizer})")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="scalarizer parameter, e.g. --param outer_mrad=20 (repeatable)")
    parser.add_argument("--window", type=positive_int, default=None,
                        help=f"HAADF patch width in px (default {DEFAULTS.window})")
    parser.add_argument("--seed", type=count, default=None, help=f"random seed (default {DEFAULTS.seed})")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                        help="any experiment setting by its name, e.g. --set hidden=32,32 --set checkpoint_every=10 "
                        "(repeatable; wins over the flag of the same setting; the settings and defaults are "
                        "listed below)")
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


def _add_run(sub: typing.Any) -> None:
    run = sub.add_parser("run", help="automated experiment replayed on pre-acquired 4D data",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=typing.cast(str, run_epilog))  # imports the scalarizers only for run --help
    run.add_argument("data", nargs="?", help="4D-STEM file (optional with --resume): .npy .npz, HDF5 (.h5 .hdf5, "
                     "py4DSTEM/emdfile .emd, Nion Swift .h5, DECTRIS master), Swift .ndata, HyperSpy .hspy .zspy, "
                     "Merlin .mib, EMPAD .raw/.xml, Gatan .dm3/.dm4 and Velox .emd (extra io)")
    run.add_argument("--out", default=None, help="output folder (summary.json, session.h5, figures)")
    _add_model_options(run)
    run.add_argument("--seeds", type=count, default=None, help=f"random seed points (default {DEFAULTS.seeds}; 0 with "
                     "--init-from)")
    run.add_argument("--steps", type=count, default=None, help=f"DKL-chosen steps after the seeds (default "
                     f"{DEFAULTS.steps})")
    run.add_argument("--acquisition", choices=ACQUISITIONS, default=None,
                     help="ei / ucb look for the extreme value; uncertainty measures where sigma is largest; map "
                     "where a measurement lowers the uncertainty summed over the survey most (best map per dose)")
    run.add_argument("--map-model", choices=MAP_MODELS, default=None,
                     help=f"what draws the prediction and uncertainty maps: survey = a GP on fixed features of the "
                     f"survey image (default {DEFAULTS.map_model}), dkl = the DKL's own fit")
    run.add_argument("--xi", type=nonnegative_float, default=None,
                     help=f"EI exploration offset (default {DEFAULTS.xi:g})")
    run.add_argument("--beta", type=nonnegative_float, default=None, help=f"UCB beta (default {DEFAULTS.beta:g})")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dkl4dstem", description="Deep-kernel-learning automated 4D-STEM experiments.")
    parser.add_argument("--version", action="version", version=f"dkl4dstem {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run(sub)
    rec = sub.add_parser("reconstruct", help="paper Fig. 3: DKL maps from random subsets vs the full-data truth",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=typing.cast(str, settings_epilog))
    rec.add_argument("data")
    rec.add_argument("--out", required=True)
    _add_model_options(rec)
    rec.add_argument("--fractions", default="1,0.1,0.01,0.001")
    rec.add_argument("--iterations", type=positive_int, default=300, help="training iterations per fraction")
    rec.add_argument("--dask", nargs="?", const=True, default=None, metavar="SCHEDULER")
    demo = sub.add_parser("demo", help="run on the small simulated graphene dataset shipped with the package")
    demo.add_argument("--out", default="dkl4dstem-demo")
    demo.add_argument("--steps", type=count, default=DEMO_STEPS)
    demo.add_argument("--seed", type=count, default=DEFAULTS.seed)
    demo.add_argument("--threads", type=positive_int, default=None)
    return parser


def run_epilog() -> str:
    return scalarizer_help() + "\n\n" + settings_epilog()


def settings_epilog() -> str:
    """The settings `--set NAME=VALUE` takes, with their defaults (dkl4dstem.config.ExperimentConfig)."""
    from dkl4dstem.config import settings_help

    return "\n".join(["settings (--set NAME=VALUE; bool: true/false, tuples: 64,64, optional: none; "
                      "scalarizer_params=a=1,b=2), defaults:"]
                     + textwrap.wrap(settings_help(), width=100, initial_indent="  ", subsequent_indent="  "))


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
