"""The panel's user features, headless on the real Swift model with usim: a region and exclusions drawn on the
survey, a forced point, a one-pattern preview, continuing a run from its session file, the summary and maps saved
beside the session, the estimate before Start and the settings remembered across restarts."""
from __future__ import annotations

import json
import os
import typing

import numpy
import pytest

pytest.importorskip("nion.swift")
pytest.importorskip("nion.usim_device")

from nion.swift.model import Graphics
from nion.utils import Geometry

from nionswift_plugin.dkl4dstem_swift import live_items
from nionswift_plugin.dkl4dstem_swift import panel as panel_module
from nionswift_plugin.dkl4dstem_swift import point_controls
from nionswift_plugin.dkl4dstem_swift import preview as preview_module
from nionswift_plugin.dkl4dstem_swift import swift_instrument

from swift_support import SwiftTestCase, acquire_survey, item, pump


def add_rectangle(display_item: typing.Any, tlhw: tuple[float, float, float, float], label: str = "") -> Graphics.RectangleGraphic:
    """As a user draws one with Swift's rectangle tool (normalized bounds)."""
    graphic = Graphics.RectangleGraphic()
    graphic.bounds = Geometry.FloatRect.from_tlhw(*tlhw)
    graphic.label = label
    display_item.add_graphic(graphic)
    return graphic


def put_pick(handler: panel_module.PanelHandler, pixel: tuple[int, int], size: int = 32) -> None:
    """Place the 'pick' mark on a survey pixel centre, as a drag would."""
    handler.pick_clicked()
    handler.find_mark(point_controls.PICK_LABEL).position = Geometry.FloatPoint(y=(pixel[0] + 0.5) / size,
                                                                                x=(pixel[1] + 0.5) / size)


def run_to_end(tc: typing.Any, handler: panel_module.PanelHandler, timeout_s: float = 150) -> typing.Any:
    pump(tc.document_controller, lambda: handler.controller.status.state == "idle", timeout_s, "run end")
    result = handler.controller.result
    assert result is not None and result.error is None, getattr(result, "error", handler.message.value)
    return result


class TestRegion(SwiftTestCase):

    @pytest.mark.slow
    def test_run_restricted_to_a_rectangle_measures_only_inside_and_never_in_the_exclusion(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            handler.set_scalarizer("vbf")
            handler.seeds.value = "5"
            handler.steps.value = "10"
            survey = acquire_survey(tc, handler)
            add_rectangle(survey, (0.25, 0.5, 0.5, 0.5))           # rows 8..23, columns 16..31
            add_rectangle(survey, (0.25, 0.5, 0.25, 0.25), "exclude")  # rows 8..15, columns 16..23
            handler.update_estimate()
            self.assertIn("1 region, 1 exclusion; 192 of 1024 positions open", handler.region_text.value)
            self.assertIn("15 patterns of 192 open positions", handler.estimate_text.value)
            session_path = os.path.join(os.getcwd(), "region.h5")
            handler.session_path.value = session_path
            self.assertTrue(handler.start(), handler.message.value)
            result = run_to_end(tc, handler)
            print("visited", result.visited)
            self.assertEqual(15, len(result.visited))
            for y, x in result.visited:
                self.assertTrue(8 <= y <= 23 and 16 <= x <= 31, (y, x))
                self.assertFalse(8 <= y <= 15 and 16 <= x <= 23, (y, x))
            # the region is in the run metadata, the session file, and the summary written beside it
            shapes = item(tc, live_items.PREDICTION_TITLE).metadata[live_items.METADATA_KEY]["region"]
            self.assertEqual(["region", "exclude"], [s["role"] for s in shapes])
            from dkl4dstem.session.store import read_session
            self.assertEqual(shapes, read_session(session_path).settings["region"])
            pump(tc.document_controller, lambda: len(handler.saved_files) == 2, 30, "summary saved")
            summary = json.loads(open(os.path.join(os.getcwd(), "region.summary.json")).read())
            for key in ("scalarizer", "visited", "values", "best_value", "best_position", "n_measured",
                        "fraction_measured", "dose_reduction", "median_decision_seconds", "excluded", "stopped"):
                self.assertIn(key, summary)
            self.assertEqual([list(p) for p in result.visited], summary["visited"])
            self.assertEqual(shapes, summary["region"])
            self.assertEqual(2, len(summary["best_position_nm"]))  # the usim survey is calibrated in nm
            maps = numpy.load(os.path.join(os.getcwd(), "region.maps.npz"))
            self.assertEqual((32, 32), maps["prediction"].shape)
            self.assertEqual(15, int(maps["measured"].sum()))
            self.assertIn("Summary and maps saved", handler.message.value)
            self.assertIn(") nm", handler.best_text.value)

    def test_a_region_that_leaves_nothing_or_too_little_is_refused_before_any_dose(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            handler.seeds.value = "5"
            handler.steps.value = "10"
            survey = acquire_survey(tc, handler)
            probe_moves: list[typing.Any] = list()
            listener = tc.instrument.probe_state_changed_event.listen(lambda *args: probe_moves.append(args))
            try:
                add_rectangle(survey, (0.0, 0.0, 0.1, 0.1))  # 3 x 3 pixels: fewer than 15 points
                self.assertFalse(handler.start())
                self.assertIn("candidate", handler.message.value)
                add_rectangle(survey, (0.0, 0.0, 1.0, 1.0), "exclude")
                self.assertFalse(handler.start())
                self.assertIn("no position", handler.message.value)
                self.assertEqual([], probe_moves)
                self.assertIsNone(handler.controller.experiment)
            finally:
                listener.close()


class TestForcedPoint(SwiftTestCase):

    @pytest.mark.slow
    def test_forced_points_are_measured_first_and_next(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            handler.seeds.value = "4"
            handler.steps.value = "200"
            acquire_survey(tc, handler)
            first, later = (2, 29), (30, 1)
            print("forced points", first, later)
            put_pick(handler, first)
            handler.force_next_clicked()  # before Start: measured first
            self.assertIn("measured first", handler.message.value)
            self.assertTrue(handler.start(), handler.message.value)
            controller = handler.controller
            instrument = controller.instrument
            pump(dc, lambda: controller.status.step >= 7, 120, "steps after the seeds")
            put_pick(handler, later)
            count = instrument.recorded_count
            handler.force_next_clicked()  # during the run: the next measurement
            self.assertIn("measured next", handler.message.value)
            pump(dc, lambda: instrument.recorded_count >= count + 2, 60, "two more points")
            handler.stop_clicked()
            result = run_to_end(tc, handler, 60)
            self.assertEqual(first, result.visited[0])
            index = result.visited.index(later)
            self.assertIn(index, (count, count + 1))  # the point in flight when clicked, then the forced one
            self.assertEqual([first, later], controller.experiment.forced_measured)
            forced_md = item(tc, live_items.MEASURED_TITLE).metadata[live_items.METADATA_KEY]["forced"]
            self.assertEqual([list(first), list(later)], forced_md)

    def test_force_without_a_pick_places_the_mark_and_explains(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            handler.force_next_clicked()
            self.assertIn("Acquire a survey first", handler.message.value)
            acquire_survey(tc, handler)
            handler.force_next_clicked()
            self.assertIsNotNone(handler.find_mark(point_controls.PICK_LABEL))
            self.assertIn("Drag the orange 'pick' point", handler.message.value)
            self.assertEqual([], handler.pending_forced)


class TestPreview(SwiftTestCase):

    def test_preview_measures_one_pattern_and_shows_its_value_without_a_run(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            handler.set_scalarizer("vbf")
            acquire_survey(tc, handler)
            put_pick(handler, (5, 7))
            probe_moves: list[typing.Any] = list()
            listener = tc.instrument.probe_state_changed_event.listen(lambda state, position: probe_moves.append(position))
            try:
                handler.preview_clicked()
                pump(tc.document_controller, lambda: handler.preview.result is not None, 30, "preview")
            finally:
                listener.close()
            result = handler.preview.result
            self.assertIsNone(result.error)
            self.assertEqual((5, 7), result.pixel)
            from dkl4dstem.scalarizers import get_scalarizer
            data_item = handler.preview.data_item
            self.assertTrue(data_item.title.startswith(preview_module.PREVIEW_TITLE))
            self.assertEqual(result.pattern.shape, data_item.data_shape)
            self.assertTrue(numpy.isfinite(result.value) and result.value > 0)
            self.assertIn(f"{result.value:.4g}", handler.preview_text.value)
            self.assertIn(") nm", handler.preview_text.value)
            # one probe move to the pixel centre, then released; camera stopped; no run
            self.assertEqual(2, len(probe_moves), probe_moves)
            self.assertAlmostEqual(5.5 / 32, probe_moves[0].y)
            self.assertAlmostEqual(7.5 / 32, probe_moves[0].x)
            self.assertIsNone(probe_moves[-1])
            self.assertFalse(tc.camera_hardware_source.is_playing)
            self.assertIsNone(handler.controller.experiment)
            self.assertTrue(handler.idle.value)
            # the shown value is the scalarizer of the shown pattern, with the calibration a run would use
            calibration = swift_instrument.detector_calibration_for(tc.camera_hardware_source, tc.instrument)
            self.assertAlmostEqual(result.value, get_scalarizer("vbf")(data_item.data, calibration),
                                   delta=1e-6 * abs(result.value))

    @pytest.mark.slow
    def test_preview_refuses_a_scalarizer_needing_a_reference_before_any_dose(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            handler.set_scalarizer("bragg_distance")
            acquire_survey(tc, handler)
            put_pick(handler, (3, 3))
            handler.preview_clicked()
            self.assertIn("vacuum reference", handler.message.value)
            self.assertFalse(handler.preview.is_busy)
            self.assertIsNone(tc.instrument.probe_position)


class TestContinue(SwiftTestCase):

    @pytest.mark.slow
    def test_continue_an_interrupted_run_from_its_session_file(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            handler.set_scalarizer("vbf")
            handler.seeds.value = "4"
            handler.steps.value = "3"
            survey = acquire_survey(tc, handler)
            add_rectangle(survey, (0.0, 0.0, 0.5, 0.5))  # rows and columns 0..15
            session_path = os.path.join(os.getcwd(), "first.h5")
            handler.session_path.value = session_path
            forced = (3, 12)
            print("forced point", forced)
            put_pick(handler, forced)
            handler.force_next_clicked()
            self.assertTrue(handler.start(), handler.message.value)
            first = run_to_end(tc, handler)
            self.assertEqual(7, len(first.visited))
            self.assertEqual(forced, first.visited[0])
            pump(tc.document_controller, lambda: len(handler.saved_files) == 2, 30, "first summary")
            handler.saved_files = []
            # nothing to continue with the same number of steps
            handler.continue_clicked()
            self.assertIn("set Steps above 3", handler.message.value)
            handler.steps.value = "6"
            handler.continue_clicked()
            self.assertIn("Continuing", handler.message.value)
            second = run_to_end(tc, handler)
            self.assertEqual(10, len(second.visited))
            # the continued run's measured map shows the earlier points too, with their values from the session
            measured = item(tc, "DKL measured", 2)
            pump(tc.document_controller, lambda: int(numpy.isfinite(measured.data).sum()) == 10, 30, "all 10 points")
            for (y, x), value in zip(first.visited, first.values):
                self.assertEqual(numpy.float32(value), measured.data[y, x])  # (the map is float32)
            self.assertEqual(first.visited, second.visited[:7])
            self.assertTrue(all(y < 16 and x < 16 for y, x in second.visited), second.visited)  # region kept
            from dkl4dstem.session.store import read_session
            session = read_session(session_path)
            self.assertEqual(10, len(session.positions))
            self.assertEqual([list(p) for p in second.visited], session.positions.tolist())
            self.assertEqual(6, session.settings["steps"])
            pump(tc.document_controller, lambda: len(handler.saved_files) == 2, 30, "second summary")
            self.assertEqual([list(forced)], read_session(session_path).settings["forced"])  # kept across the resume
            summary = json.loads(open(os.path.join(os.getcwd(), "first.summary.json")).read())
            self.assertEqual(10, summary["n_measured"])
            self.assertEqual([list(forced)], summary["forced"])

    def test_continue_refuses_a_missing_file_and_another_survey(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            acquire_survey(tc, handler)
            handler.session_path.value = os.path.join(os.getcwd(), "missing.h5")
            handler.continue_clicked()
            self.assertIn("does not exist", handler.message.value)
            from dkl4dstem.session.store import SessionWriter
            path = os.path.join(os.getcwd(), "other.h5")
            writer = SessionWriter(path, {"scalarizer": "vbf", "seeds": 2, "steps": 2}, numpy.ones((32, 32)), (8, 8))
            writer.append(1, 1, numpy.ones((8, 8)), 1.0, "seed")
            writer.close()
            handler.session_path.value = path
            handler.continue_clicked()
            self.assertIn("not in this Swift library", handler.message.value)
            self.assertIsNone(handler.controller.experiment)


class TestPreferences(SwiftTestCase):

    def test_settings_are_remembered_by_a_new_panel(self) -> None:
        with self.swift() as (tc, panel):
            dc = tc.document_controller
            store: dict[str, str] = dict()  # the headless TestUI keeps no preferences: a dictionary stands in
            dc.ui.get_persistent_string = lambda key, default=None: store.get(key, default or "")
            dc.ui.set_persistent_string = lambda key, value: store.__setitem__(key, value)
            handler = panel.handler
            handler.set_scalarizer("vadf")
            handler.scalarizer_params.value = "inner_mrad=20"
            handler.steps.value = "77"
            handler.exposure_ms.value = "3.5"
            handler.goal_index.value = 1
            handler.save_preferences()
            self.assertIn("dkl4dstem/panel_settings", store)
            panel2 = panel_module.DKLPanel(dc, "dkl4dstem-panel-2", {})
            try:
                handler2 = panel2.handler
                self.assertEqual("vadf", handler2.scalarizer_name)
                self.assertEqual("inner_mrad=20", handler2.scalarizer_params.value)
                self.assertEqual("77", handler2.steps.value)
                self.assertEqual("3.5", handler2.exposure_ms.value)
                self.assertEqual(1, handler2.goal_index.value)
                self.assertEqual(handler.camera_id, handler2.camera_id)
            finally:
                panel2.close()
            store["dkl4dstem/panel_settings"] = "{not json"
            panel3 = panel_module.DKLPanel(dc, "dkl4dstem-panel-3", {})
            try:
                self.assertEqual("50", panel3.handler.steps.value)  # a broken entry: the defaults
            finally:
                panel3.close()


def test_region_mask_rules_rectangles_ellipses_rotation_and_exclusions() -> None:
    """Pixel centres inside a region are open, inside an exclusion closed; no shapes: no mask."""
    from nionswift_plugin.dkl4dstem_swift import region
    assert region.exclude_mask([], (8, 8)) is None
    rect = {"role": "region", "kind": "rectangle", "top": 0.25, "left": 0.25, "height": 0.5, "width": 0.5}
    mask = region.exclude_mask([rect], (8, 8))
    assert (~mask).sum() == 16 and not mask[2:6, 2:6].any() and mask[:2].all()
    # on 16 x 16 the square (half side 4 px) turned by 45 degrees opens the diamond |dy| + |dx| <= 4 sqrt(2)
    square = region.exclude_mask([rect], (16, 16))
    turned = region.exclude_mask([dict(rect, rotation=0.7853981633974483)], (16, 16))
    assert square[7, 3] and not turned[7, 3]  # beside the square's edge, inside the diamond
    assert not square[4, 4] and turned[4, 4]  # the square's corner pixel, outside the diamond
    ellipse = region.exclude_mask([dict(rect, kind="ellipse")], (8, 8))
    assert ellipse[2, 2] and not ellipse[3, 3]  # the corner pixel of the bounds is outside the ellipse
    excluded = region.exclude_mask([rect, {"role": "exclude", "kind": "rectangle", "top": 0.25, "left": 0.25,
                                           "height": 0.25, "width": 0.25}], (8, 8))
    assert (~excluded).sum() == 12 and excluded[2:4, 2:4].all()
    drawing = {"role": "exclude", "kind": "rectangle", "top": 0.5, "left": 0.5, "height": 0.0, "width": 0.0}
    assert (~region.exclude_mask([rect, drawing], (8, 8))).sum() == 16  # a shape being drawn covers nothing
    assert region.is_exclude("Exclude: hole") and not region.is_exclude("region")


def test_estimate_text_counts_points_fraction_beam_and_run_time() -> None:
    from nionswift_plugin.dkl4dstem_swift import estimate
    text = estimate.estimate_text(60, 1024, 4096, 5.0)
    assert "60 patterns of 1,024 open positions" in text and "1.5 % of the 4,096-pixel survey" in text
    assert "dose: beam on 0.3 s (60 x 5 ms)" in text and "~25 ms per point" in text
    assert "~40 ms per point" in estimate.estimate_text(60, 4096, 4096, 5.0, per_point_ms=40.0)
    assert "more points than the 50 open positions" in estimate.estimate_text(60, 50, 4096, 5.0)
