"""The checks and parts of a run's Start, in order, before any dose: the survey and devices (survey_problem,
plan_run: config, park mark, reference, scalarizer calibration, the instrument), then the run's metadata and the
engine's Experiment (make_experiment). The run_controller claims the microscope and makes the live items between."""
from __future__ import annotations

import dataclasses
import time
import typing

import numpy

from nion.data import DataAndMetadata
from nion.utils import Geometry

from dkl4dstem.errors import InputError

from . import live_items
from . import settings as settings_module
from . import swift_instrument

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DataItem
    from nion.swift.model import DisplayItem


@dataclasses.dataclass
class RunPlan:
    """What a checked Start runs with."""
    data_item: DataItem.DataItem
    survey_xdata: DataAndMetadata.DataAndMetadata
    stem_controller: typing.Any
    instrument: swift_instrument.SwiftInstrument
    units: str


def survey_problem(display_item: DisplayItem.DisplayItem | None, settings: settings_module.RunSettings) -> str | None:
    """Why this survey cannot be used with the chosen scan device now (None when it can)."""
    if display_item is None or display_item.data_item is None:
        return "no survey: acquire one or select a HAADF image"
    scan = swift_instrument.find_hardware_source(settings.scan_id)
    stem_controller = getattr(scan, "stem_controller", None) if scan else None
    if stem_controller is None:
        return "choose a scan device (none is available)"
    return swift_instrument.scan_context_problem(display_item.data_item.xdata, stem_controller)


def devices_for(survey_display_item: DisplayItem.DisplayItem | None,
                settings: settings_module.RunSettings) -> tuple[typing.Any, typing.Any]:
    """The scan device and camera for this survey; raises InputError with a message."""
    problem = survey_problem(survey_display_item, settings)
    if problem:
        raise InputError(problem)
    scan = swift_instrument.find_hardware_source(settings.scan_id)
    camera = swift_instrument.find_hardware_source(settings.camera_id)
    if camera is None:
        raise InputError("choose a camera (none is available)")
    return scan, camera


def plan_run(survey_display_item: DisplayItem.DisplayItem, settings: settings_module.RunSettings,
             options: settings_module.RunOptions, park_position: Geometry.FloatPoint | None,
             reference: numpy.ndarray | None, reference_binning: int | None) -> RunPlan:
    """Check everything a run needs and make its instrument; raises InputError with a message."""
    scan, camera = devices_for(survey_display_item, settings)
    data_item = survey_display_item.data_item
    assert data_item is not None and data_item.xdata is not None
    survey_xdata = data_item.xdata
    stem_controller = scan.stem_controller
    survey = swift_instrument.survey_from_xdata(survey_xdata, {"data_item_uuid": str(data_item.uuid)})
    config = settings.config
    config.validate(survey.shape, options.n_excluded)
    if settings.after_run == "park" and park_position is None:
        raise InputError("after-run 'park' needs a 'park' mark on the survey (click 'Mark park')")
    if options.resume is None and reference is not None and reference_binning not in (None, settings.camera.binning):
        raise InputError("the vacuum reference was taken with another camera binning; acquire it again")
    reference = options.reference if options.resume is not None else reference
    from dkl4dstem.scalarizers import get_scalarizer
    scalarizer = get_scalarizer(config.scalarizer, **config.scalarizer_params)
    calibration = swift_instrument.detector_calibration_for(camera, stem_controller, reference)
    scalarizer.check_calibration(calibration)  # e.g. bragg_distance without a vacuum reference: refused here
    instrument = swift_instrument.SwiftInstrument(stem_controller, scan, camera, survey=survey,
                                                  camera_settings=settings.camera, reference=reference,
                                                  park_position=park_position if settings.after_run == "park" else None)
    return RunPlan(data_item, survey_xdata, stem_controller, instrument, scalarizer.units_for(calibration))


def run_metadata(plan: RunPlan, settings: settings_module.RunSettings,
                 options: settings_module.RunOptions) -> dict[str, typing.Any]:
    """The metadata every item of the run carries (live_items)."""
    return {"settings": settings.as_metadata(), "survey_uuid": str(plan.data_item.uuid),
            "survey_title": plan.data_item.title, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "units": plan.units, **options.as_metadata()}


def make_live_items(document_controller: DocumentController.DocumentController, plan: RunPlan,
                    survey_display_item: DisplayItem.DisplayItem, settings: settings_module.RunSettings,
                    options: settings_module.RunOptions,
                    on_applied: typing.Callable[[typing.Any], None]) -> live_items.LiveItems:
    """The run's live items, numbered after the runs already in the document (a continued run's items show the
    session's points from the start; the engine measures only the new ones)."""
    run = live_items.next_run_number(document_controller.document_model)
    resumed = options.resume
    earlier = (resumed.positions.tolist(), resumed.values.tolist()) if resumed is not None else ((), ())
    return live_items.LiveItems(document_controller, survey_display_item, plan.survey_xdata,
                                run_metadata(plan, settings, options), plan.units, settings.n_total, plan.instrument,
                                on_applied=on_applied, run=run, earlier_points=earlier)


def make_experiment(plan: RunPlan, settings: settings_module.RunSettings, options: settings_module.RunOptions,
                    on_event: typing.Callable[[typing.Any], None]) -> typing.Any:
    """The engine's Experiment for this run, with the forced points queued."""
    from dkl4dstem.experiment import Experiment
    experiment = Experiment(plan.instrument, settings.config, session_path=settings.session_path or None,
                            on_event=on_event, exclude_mask=options.exclude_mask,
                            resume=options.resume, session_settings=dict(
                                plugin=settings.as_metadata(), survey_uuid=str(plan.data_item.uuid),
                                survey_title=plan.data_item.title, **options.as_metadata()))
    for y, x in options.forced:
        experiment.force_next(y, x)
    return experiment
