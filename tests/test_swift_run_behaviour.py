"""How runs behave in Swift under load: Stop without the UI thread, bounded UI work, refusals before any dose,
numbered runs the display follows, and many runs in one session. Headless, real Swift model + usim."""
from __future__ import annotations

import math
import threading
import time
import typing

import numpy
import pytest

pytest.importorskip("nion.swift")
pytest.importorskip("nion.usim_device")

from nion.swift.model import DataItem
from nion.swift.model import Graphics
from nion.utils import Geometry

from nionswift_plugin.dkl4dstem_swift import colour_scale
from nionswift_plugin.dkl4dstem_swift import live_items
from nionswift_plugin.dkl4dstem_swift import survey_marks

from test_swift_plugin import RecordingProbe, SwiftTestCase, acquire_survey, item, live_dkl_items, pump, select

N_KINDS = len(live_items.MAP_TITLES) + 1  # four maps and the raw patterns per run


def failing_scalarizer(pattern: numpy.ndarray, calibration: typing.Any) -> float:
    """A scalarizer that fails on every pattern with an empty message (as bragg_distance did on usim)."""
    raise ValueError()


def load_ui(tc: typing.Any, n_graphics: int) -> typing.Any:
    """A busy UI: an image with n point graphics, shown and selected (Swift's inspector builds one section each)."""
    data_item = DataItem.new_data_item(numpy.random.default_rng(5).random((64, 64)))
    tc.document_model.append_data_item(data_item)
    display_item = tc.document_model.get_display_item_for_data_item(data_item)
    rng = numpy.random.default_rng(6)
    print(f"load_ui: {n_graphics} graphics, rng seed 6")
    with display_item.display_item_changes():
        for y, x in rng.random((n_graphics, 2)):
            graphic = Graphics.PointGraphic()
            graphic.position = Geometry.FloatPoint(y=float(y), x=float(x))
            display_item.add_graphic(graphic)
    dc = tc.document_controller
    display_panel = dc.workspace_controller.display_panels[0]
    dc.selected_display_panel = display_panel
    display_panel.set_display_panel_display_item(display_item)
    return display_item


def start_run(tc: typing.Any, handler: typing.Any, seeds: int, steps: int) -> None:
    handler.seeds.value = str(seeds)
    handler.steps.value = str(steps)
    assert handler.start(), handler.message.value
    pump(tc.document_controller, lambda: handler.controller.thread is not None or handler.idle.value, 30, "the loop to start")


class TestStop(SwiftTestCase):

    def test_stop_acts_without_the_ui_thread_at_most_one_more_point_under_ui_load(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            survey = acquire_survey(tc, handler)
            handler.controller.survey_display_item = survey
            busy = load_ui(tc, 200)  # (2000 took minutes to build headless: Swift work grows faster than n)
            start_run(tc, handler, 4, 300)
            # Start shows the survey in the selected display panel (panel.set_survey): the user goes back to the
            # busy image, so that the display and the inspector do the work of every move below. (Without it the
            # pump was a tight pure-Python loop, 0.3 ms a tick, which can starve the torch fit of the GIL: no UI load.)
            select(dc, busy)
            self.assertIs(busy, dc.selected_display_panel.display_item)
            instrument = handler.controller.instrument
            probe = RecordingProbe(tc.instrument)
            try:
                # the UI thread stays busy: every tick also moves one of the 200 graphics (inspector, display)
                graphics = list(busy.graphics)

                def busy_pump(predicate: typing.Callable[[], bool], what: str) -> None:
                    k = 0
                    end = time.perf_counter() + 120
                    while not predicate():
                        graphics[k % len(graphics)].position = Geometry.FloatPoint(y=0.5, x=(k % 100) / 100)
                        dc.periodic()
                        k += 1
                        assert time.perf_counter() < end, what
                busy_pump(lambda: handler.controller.status.step >= 8, "steps under load")
                at_click = instrument.recorded_count
                moves_at_click = len(probe.positions)
                handler.stop_clicked()
                # the UI thread does nothing more now (as if blocked): the stop must still act
                deadline = time.perf_counter() + 20
                while tc.instrument.probe_position is not None and time.perf_counter() < deadline:
                    time.sleep(0.01)
                released_count = instrument.recorded_count
                moves_after = [p for p in probe.positions[moves_at_click:]]
                print(f"measured at click {at_click}, when the probe was released {released_count}, "
                      f"probe moves after the click {moves_after}")
                self.assertIsNone(tc.instrument.probe_position)
                self.assertLessEqual(released_count - at_click, 1)  # at most the frame in flight
                self.assertLessEqual(len([p for p in moves_after if p is not None]), 1)
                self.assertFalse(tc.camera_hardware_source.is_playing)
                handler.controller.thread.join(30)
                self.assertLessEqual(instrument.recorded_count - at_click, 1)
                busy_pump(lambda: handler.controller.status.state == "idle", "idle")
            finally:
                probe.close()
            result = handler.controller.result
            self.assertTrue(result.stopped)
            self.assertLessEqual(len(result.visited) - at_click, 1)
            self.assertIn("Stopped", handler.message.value)

    def test_panel_close_button_stops_the_run(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            acquire_survey(tc, handler)
            start_run(tc, handler, 4, 300)
            instrument = handler.controller.instrument
            pump(dc, lambda: handler.controller.status.step >= 6, 60, "steps")
            at_close = instrument.recorded_count
            panel.dock_widget._handle_close()  # what the panel's X does (Swift then only hides the panel)
            handler.controller.thread.join(30)
            pump(dc, lambda: handler.controller.status.state == "idle", 30, "idle")
            self.assertLessEqual(instrument.recorded_count - at_close, 1)
            self.assertIn("panel was closed", handler.message.value)
            self.assertIsNone(tc.instrument.probe_position)


class TestRefusalsBeforeDose(SwiftTestCase):

    def test_start_without_survey_refuses_and_acquires_nothing(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            probe = RecordingProbe(tc.instrument)
            try:
                self.assertFalse(handler.start())
            finally:
                probe.close()
            self.assertIn("No survey", handler.message.value)
            self.assertEqual("idle", handler.controller.status.state)
            self.assertEqual([], [d.title for d in tc.document_model.data_items if d.title.startswith("DKL")])
            self.assertEqual([], probe.positions)
            self.assertFalse(tc.scan_hardware_source.is_playing)

    def test_bragg_distance_without_reference_is_refused_before_any_dose(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            acquire_survey(tc, handler)
            n_items = len(tc.document_model.data_items)
            handler.set_scalarizer("bragg_distance")
            probe = RecordingProbe(tc.instrument)
            try:
                self.assertFalse(handler.start())
            finally:
                probe.close()
            self.assertIn("reference", handler.message.value)
            self.assertEqual([], probe.positions)
            self.assertEqual(n_items, len(tc.document_model.data_items))
            self.assertIsNone(handler.controller.experiment)

    def test_a_scalarizer_that_gives_nothing_stops_after_three_seed_points_with_the_reason(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            handler.extra_config = dict(handler.extra_config, scalarizer="test_swift_run_behaviour:failing_scalarizer")
            acquire_survey(tc, handler)
            start_run(tc, handler, 10, 20)
            pump(tc.document_controller, lambda: handler.controller.status.state == "idle", 60, "the run to stop")
            result = handler.controller.result
            self.assertEqual(3, len(result.visited), handler.message.value)
            self.assertIn("no usable value at the first 3 points", handler.message.value)
            self.assertIn("ValueError", handler.message.value)  # never an empty reason
            self.assertIsNone(tc.instrument.probe_position)


class TestRuns(SwiftTestCase):

    def test_runs_are_numbered_grouped_and_the_display_panels_follow_the_current_run(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            acquire_survey(tc, handler)
            start_run(tc, handler, 4, 22)
            pump(dc, lambda: handler.controller.status.state == "idle", 120, "run 1")
            handler.show_maps()
            shown = [p.display_item for p in dc.workspace_controller.display_panels]
            first = item(tc, live_items.PREDICTION_TITLE, 1)
            self.assertIn(tc.document_model.get_display_item_for_data_item(first), shown)
            start_run(tc, handler, 4, 3)
            pump(dc, lambda: handler.controller.status.state == "idle" and not live_dkl_items(tc), 120, "run 2")
            shown = [p.display_item for p in dc.workspace_controller.display_panels]
            for title in (live_items.PREDICTION_TITLE, live_items.UNCERTAINTY_TITLE, live_items.ACQUISITION_TITLE):
                second = tc.document_model.get_display_item_for_data_item(item(tc, title, 2))
                self.assertIn(second, shown, title)
                self.assertNotIn(tc.document_model.get_display_item_for_data_item(item(tc, title, 1)), shown, title)
            self.assertEqual(["DKL run 1", "DKL run 2"], [g.title for g in tc.document_model.data_groups])
            self.assertEqual(2, item(tc, live_items.MEASURED_TITLE, 2).metadata[live_items.METADATA_KEY]["run"])
            # the marks of run 1 were reused: still at most 20 on the survey, the visible ones are run 2's 7 points
            marks = survey_marks.marks_on(handler.controller.survey_display_item)
            self.assertEqual(survey_marks.MAX_MARKS, len(marks))
            self.assertEqual({str(k) for k in range(7)}, {g.label for g in marks if g.stroke_color != survey_marks.HIDDEN_COLOR})
            # a colour scale on each map, its ends labelled with the data range and the units
            uncertainty = item(tc, live_items.UNCERTAINTY_TITLE, 2)
            display_item = tc.document_model.get_display_item_for_data_item(uncertainty)
            bar = [g for g in display_item.graphics if g.graphic_id == colour_scale.GRAPHIC_ID]
            self.assertEqual(colour_scale.N_STEPS, len(bar))
            self.assertEqual(f"{float(numpy.nanmax(uncertainty.data)):.4g} a.u.", bar[-1].label)
            self.assertEqual("a.u.", uncertainty.xdata.intensity_calibration.units)


@pytest.mark.slow
class TestLongRuns(SwiftTestCase):

    def test_ui_work_stays_bounded_during_a_500_point_run_at_128(self) -> None:
        """Structure, not time: per UI task at most one data item changes, the survey never holds more than 20
        marks, no graphic is removed; the task durations are printed (benchmarks/plugin_overhead.py tables them)."""
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            handler.survey_size.value = "128"
            survey = acquire_survey(tc, handler)
            removed: list[typing.Any] = list()
            listener = survey.item_removed_event.listen(lambda key, value, index: removed.append(key))
            start_run(tc, handler, 10, 490)
            items = handler.controller.live_items
            assert items is not None
            durations: list[float] = list()
            most_changed, most_marks = 0, 0
            end = time.perf_counter() + 900
            thread = handler.controller.thread
            assert thread is not None
            while thread.is_alive():  # during the run (the one-off finish after it applies everything at once)
                before = {t: d.modified_count for t, d in items.items.items()}
                t0 = time.perf_counter()
                dc.periodic()
                durations.append(time.perf_counter() - t0)
                most_changed = max(most_changed, sum(d.modified_count != before[t] for t, d in items.items.items()))
                most_marks = max(most_marks, len(survey_marks.marks_on(survey)))
                self.assertLess(time.perf_counter(), end)
                time.sleep(0.002)
            pump(dc, lambda: handler.controller.status.state == "idle", 60, "idle")
            listener.close()
            ms = numpy.array(durations) * 1000
            print(f"{len(ms)} UI ticks: median {numpy.median(ms):.2f} ms, p99 {numpy.percentile(ms, 99):.1f} ms, "
                  f"max {ms.max():.1f} ms; rounds {items.apply_count}, UI CPU {items.apply_cpu_s:.2f} s")
            self.assertEqual(500, len(handler.controller.result.visited))
            self.assertLessEqual(most_changed, 1)
            self.assertLessEqual(most_marks, survey_marks.MAX_MARKS)
            self.assertEqual([], [k for k in removed if k == "graphics"])

    def test_thirty_runs_in_one_session_no_hang_and_only_the_kept_items(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            survey = acquire_survey(tc, handler)
            for run in range(1, 31):
                start_run(tc, handler, 3, 2)
                seconds = pump(dc, lambda: handler.controller.status.state == "idle" and not live_dkl_items(tc), 120,
                               f"run {run}")
                print(f"run {run}: {seconds:.1f} s")
                self.assertIn("Finished", handler.message.value)
                run_items = [d for d in tc.document_model.data_items if d.title.startswith("DKL") and "#" in d.title]
                self.assertEqual(N_KINDS * run, len(run_items))  # what is kept: one set per run, nothing else
                self.assertLessEqual(len(survey_marks.marks_on(survey)), survey_marks.MAX_MARKS)
            self.assertEqual(30, len(tc.document_model.data_groups))
            self.assertEqual(live_items.run_title(live_items.PREDICTION_TITLE, 30), item(tc, live_items.PREDICTION_TITLE).title)
