"""How runs behave in Swift under load: Stop without the UI thread, bounded UI work, refusals before any dose,
numbered runs the display follows, and many runs in one session. Headless, real Swift model + usim."""
from __future__ import annotations

import time
import typing

import numpy
import pytest

pytest.importorskip("nion.swift")
pytest.importorskip("nion.usim_device")

from nion.swift.model import DataItem
from nion.swift.model import DisplayItem
from nion.swift.model import Graphics
from nion.utils import Geometry

from nionswift_plugin.dkl4dstem_swift import colour_scale
from nionswift_plugin.dkl4dstem_swift import live_items
from nionswift_plugin.dkl4dstem_swift import survey_marks
from nionswift_plugin.dkl4dstem_swift import ui_tasks

from swift_support import RecordingProbe, SwiftTestCase, acquire_survey, item, live_dkl_items, pump, select

N_KINDS = len(live_items.MAP_TITLES) + 1  # four maps and the raw patterns per run
MAX_TASK_BASELINES = 20  # the plug-in's longest UI task during a run, in 128x128 map updates (CPU time; one is
                         # 1.3-2.4 ms on the 2-core box: the 50 ms goal; seen at most 10)


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


def map_update_cpu_s(tc: typing.Any, n: int = 15) -> float:
    """Baseline for the UI tasks: the median CPU time of one Swift data update of a 128x128 map (a fresh item)."""
    rng = numpy.random.default_rng(7)
    print("map_update_cpu_s: rng seed 7")
    data_item = DataItem.new_data_item(rng.random((128, 128)).astype(numpy.float32))
    tc.document_model.append_data_item(data_item)
    seconds = list()
    for _ in range(n):
        data = rng.random((128, 128)).astype(numpy.float32)
        start = time.thread_time()
        data_item.set_data(data)
        seconds.append(time.thread_time() - start)
        tc.document_controller.periodic()
    tc.document_model.remove_data_item(data_item)
    return float(numpy.median(seconds))


def print_tasks(title: str, tasks: typing.Sequence[ui_tasks.TaskTiming]) -> None:
    """Longest first, by kind: wall and CPU time (the CPU time without garbage collections), the time the UI thread
    waited for a core and the time it was blocked (GIL, locks, I/O)."""
    print(f"{title}: {len(tasks)} tasks")
    kinds = sorted({t.kind for t in tasks}, key=lambda k: -max(t.wall_s for t in tasks if t.kind == k))
    for kind in kinds:
        these = [t for t in tasks if t.kind == kind]
        wall = numpy.array([t.wall_s for t in these]) * 1000
        own = numpy.array([t.own_cpu_s for t in these]) * 1000
        gc_ms = 1000 * max(t.gc_s for t in these)
        ready_ms, blocked_ms = 1000 * max(t.ready_s for t in these), 1000 * max(t.blocked_s for t in these)
        print(f"  {kind:32s} n {len(these):4d}  wall median {numpy.median(wall):6.1f} max {wall.max():6.1f}  "
              f"own CPU median {numpy.median(own):6.1f} max {own.max():6.1f}  GC in a task max {gc_ms:5.1f}  "
              f"no core max {ready_ms:5.1f}  blocked max {blocked_ms:5.1f} ms")


def start_run(tc: typing.Any, handler: typing.Any, seeds: int, steps: int) -> None:
    handler.seeds.value = str(seeds)
    handler.steps.value = str(steps)
    assert handler.start(), handler.message.value
    pump(tc.document_controller, lambda: handler.controller.thread is not None or handler.idle.value, 30, "the loop to start")


class TestStop(SwiftTestCase):

    @pytest.mark.slow
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

    @pytest.mark.slow
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

    @pytest.mark.slow
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

    @pytest.mark.slow
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
        """Structure: per UI tick at most one data item changes; while the loop runs no data item or graphic is
        created or removed (all are made at Start, before the first point); the survey never holds more than 20
        marks. Time: the plug-in's own UI tasks (ui_tasks.LOG, CPU time without garbage collections), from the Start
        click to the end of the loop, against a baseline measured here on the same UI thread: one Swift update of a
        128x128 map. Display data is computed on threads, as in the app. The durations are printed by kind
        (benchmarks/plugin_overhead.py tables them)."""
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            handler.survey_size.value = "128"
            survey = acquire_survey(tc, handler)
            DisplayItem.DisplayDataChannel._force_sync -= 1  # the app's way: display data on threads
            try:
                baseline_s = map_update_cpu_s(tc)
                handler.seeds.value, handler.steps.value = "10", "490"
                t_start = time.perf_counter()
                with ui_tasks.timing("Start click"):
                    self.assertTrue(handler.start(), handler.message.value)
                pump(dc, lambda: handler.controller.thread is not None or handler.idle.value, 30, "the loop to start")
                items = handler.controller.live_items
                thread = handler.controller.thread
                assert items is not None and thread is not None
                display_items = [survey] + items.display_items
                changes: list[str] = list()
                listeners = [d.item_inserted_event.listen(lambda key, *args: changes.append(f"+{key}")) for d in display_items]
                listeners += [d.item_removed_event.listen(lambda key, *args: changes.append(f"-{key}")) for d in display_items]
                def dkl_items() -> int:  # (Swift adds the camera's own live item at the first frame)
                    return len([d for d in tc.document_model.data_items if d.title.startswith("DKL")])

                n_data_items = dkl_items()
                durations: list[float] = list()
                most_changed, most_marks, most_data_items = 0, 0, n_data_items
                end = time.perf_counter() + 900
                while thread.is_alive():  # the loop runs (the end of the run is reported below)
                    before = {t: d.modified_count for t, d in items.items.items()}
                    t0 = time.perf_counter()
                    dc.periodic()
                    durations.append(time.perf_counter() - t0)
                    most_changed = max(most_changed, sum(d.modified_count != before[t] for t, d in items.items.items()))
                    most_marks = max(most_marks, len(survey_marks.marks_on(survey)))
                    most_data_items = max(most_data_items, dkl_items())
                    self.assertLess(time.perf_counter(), end)
                    time.sleep(0.02)  # Swift's UI timer
                t_loop_end = time.perf_counter()
                for listener in listeners:
                    listener.close()
                listeners.clear()
                pump(dc, lambda: handler.controller.status.state == "idle" and not live_dkl_items(tc), 120, "the end")
            finally:
                DisplayItem.DisplayDataChannel._force_sync += 1
            tasks = ui_tasks.LOG.since(t_start)
            during = [t for t in tasks if t.at < t_loop_end]
            ms = numpy.array(durations) * 1000
            print(f"{len(ms)} UI ticks during the loop: median {numpy.median(ms):.1f} ms, p99 {numpy.percentile(ms, 99):.1f} ms, "
                  f"max {ms.max():.1f} ms (Swift's own work included); baseline: one 128x128 map update "
                  f"{1000 * baseline_s:.2f} ms CPU")
            print_tasks("the plug-in's UI tasks from Start to the end of the loop", during)
            print_tasks("after the loop (the end of the run)", [t for t in tasks if t.at >= t_loop_end])
            self.assertEqual(500, len(handler.controller.result.visited))
            self.assertLessEqual(most_changed, 1)
            self.assertLessEqual(most_marks, survey_marks.MAX_MARKS)
            self.assertEqual([], changes)  # no graphic (marks, colour bars) made or removed while the loop ran
            self.assertEqual(n_data_items, most_data_items)  # nor a data item of ours
            self.assertIn("live update: marks", {t.kind for t in during})
            longest = max(during, key=lambda t: t.own_cpu_s)
            self.assertLessEqual(longest.own_cpu_s, MAX_TASK_BASELINES * baseline_s, longest)

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
