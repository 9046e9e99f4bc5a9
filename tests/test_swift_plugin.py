"""The Nion Swift plug-in, headless, on the real Swift model (nion.ui TestUI) with the usim microscope."""
from __future__ import annotations

import os
import sys
import threading
import time
import typing

import numpy
import pytest

pytest.importorskip("nion.swift")
pytest.importorskip("nion.usim_device")

from nion.swift import Panel
from nion.swift.model import DataItem
from nion.swift.model import Graphics
from nion.ui import Window

from dkl4dstem.experiment import StepEvent
from nionswift_plugin.dkl4dstem_swift import extension as extension_module
from nionswift_plugin.dkl4dstem_swift import live_items
from nionswift_plugin.dkl4dstem_swift import panel as panel_module
from nionswift_plugin.dkl4dstem_swift import panel_survey
from nionswift_plugin.dkl4dstem_swift import survey_marks

from swift_support import FAST_CONFIG, RecordingProbe, SwiftTestCase, acquire_survey, item, live_dkl_items, pump, select


MAP_TITLES = live_items.MAP_TITLES


def spy_on_close(controller: typing.Any) -> dict[str, typing.Any]:
    """Record the measurement count and time when the controller's close() starts (Swift closes panels in turn)."""
    at_close: dict[str, typing.Any] = dict()
    close = controller.close

    def close_spy(*args: typing.Any, **kwargs: typing.Any) -> None:
        if "count" not in at_close:  # the first close: the panel's (the handler closes it again, idempotently)
            at_close.update(count=controller.instrument.recorded_count, t=time.perf_counter())
        close(*args, **kwargs)

    controller.close = close_spy
    return at_close


def waiting_at_pause_gate(thread: threading.Thread) -> bool:
    """The run's thread is blocked in RunControl.wait_if_paused (its current stack, read from this thread)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "wait_if_paused":
            return True
        frame = frame.f_back
    return False


def settled_at_pause_gate(thread: threading.Thread, instrument: typing.Any) -> typing.Callable[[], bool]:
    """A pump() predicate: the thread is at the pause gate on two polls in a row with the same measurement count."""
    seen: dict[str, int] = dict()

    def settled() -> bool:
        if not waiting_at_pause_gate(thread):
            seen.clear()
            return False
        count = instrument.recorded_count
        if seen.get("count") == count:
            return True
        seen["count"] = count
        return False

    return settled


class TestFullRun(SwiftTestCase):

    def test_full_vbf_run_fills_items_marks_points_and_follows_haadf(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            handler.set_scalarizer("vbf")
            handler.seeds.value = "8"
            handler.steps.value = "20"
            survey_display_item = acquire_survey(tc, handler)
            survey_xdata = survey_display_item.data_item.xdata
            self.assertEqual((32, 32), survey_xdata.data_shape)
            probe = RecordingProbe(tc.instrument)
            try:
                self.assertTrue(handler.start(), handler.message.value)
                self.assertFalse(handler.idle.value)
                pump(dc, lambda: handler.controller.live_items is not None and handler.controller.status.step >= 3, 60, "first steps")
                # live while running
                for title in MAP_TITLES:
                    self.assertTrue(item(tc, title).is_live, title)
                pump(dc, lambda: handler.controller.status.state == "idle", 150, "run end")
                pump(dc, lambda: not live_dkl_items(tc), 10, "the live state to end")
            finally:
                probe.close()
            result = handler.controller.result
            self.assertIsNone(result.error)
            self.assertFalse(result.stopped)
            n = len(result.visited)
            self.assertEqual(28, n)
            self.assertIn("Finished", handler.message.value)
            self.assertEqual(100, handler.progress.value)
            self.assertIn("28 of 28", handler.step_text.value)
            # maps: survey shape and spatial calibrations, scalar units, settings in the metadata, not live anymore
            for title in MAP_TITLES:
                data_item = item(tc, title)
                self.assertFalse(data_item.is_live, title)
                self.assertEqual(survey_xdata.data_shape, data_item.data_shape, title)
                self.assertEqual(list(survey_xdata.dimensional_calibrations), list(data_item.xdata.dimensional_calibrations), title)
                self.assertEqual("nm", data_item.xdata.dimensional_calibrations[0].units)
                settings = data_item.metadata[live_items.METADATA_KEY]["settings"]
                self.assertEqual("vbf", settings["scalarizer"])
                self.assertEqual(20, settings["steps"])
                self.assertEqual(FAST_CONFIG["update_iterations"], settings["update_iterations"])  # the engine's config
                self.assertFalse(settings["wait_for_training"])  # live: the loop never waits for the network
            self.assertEqual("a.u.", item(tc, live_items.PREDICTION_TITLE).xdata.intensity_calibration.units)
            for title in (live_items.PREDICTION_TITLE, live_items.UNCERTAINTY_TITLE, live_items.ACQUISITION_TITLE):
                self.assertTrue(numpy.all(numpy.isfinite(item(tc, title).data)), title)
            self.assertTrue(numpy.all(item(tc, live_items.UNCERTAINTY_TITLE).data >= 0))
            measured = item(tc, live_items.MEASURED_TITLE).data
            self.assertEqual(n, int(numpy.count_nonzero(numpy.isfinite(measured))))
            for (y, x), value in zip(result.visited, result.values):
                self.assertAlmostEqual(value, float(measured[y, x]), delta=abs(value) * 1e-5)
            # raw patterns: a sequence with every measured position in its metadata
            patterns = item(tc, live_items.PATTERNS_TITLE)
            self.assertTrue(patterns.xdata.is_sequence)
            self.assertEqual(n, patterns.data_shape[0])
            self.assertEqual(2, patterns.xdata.datum_dimension_count)
            pattern_md = patterns.metadata[live_items.METADATA_KEY]
            self.assertEqual([list(p) for p in result.visited], pattern_md["positions"])
            self.assertEqual("vbf", pattern_md["settings"]["scalarizer"])
            self.assertGreater(float(numpy.abs(patterns.data[-1]).sum()), 0.0)
            # the newest 20 points as point graphics on the survey, labelled with their step, the newest highlighted;
            # step k on graphic k mod 20 (a bounded set of graphics, moved, never removed)
            points = [g for g in survey_display_item.graphics if isinstance(g, Graphics.PointGraphic)]
            self.assertEqual(survey_marks.MAX_MARKS, len(points))
            by_label = {g.label: g for g in points}
            self.assertEqual({str(k) for k in range(n - survey_marks.MAX_MARKS, n)}, set(by_label))
            self.assertEqual(live_items.NEWEST_COLOR, by_label[str(n - 1)].stroke_color)
            self.assertTrue(all(g.stroke_color == live_items.POINT_COLOR for g in points if g.label != str(n - 1)))
            # the probe went exactly where the engine says it measured, then was released
            set_positions = [p for p in probe.positions if p is not None]
            self.assertEqual(n, len(set_positions))
            for k, (p, (y, x), pp) in enumerate(zip(set_positions, result.visited, pattern_md["probe_positions"])):
                self.assertTrue(0.0 <= p.y <= 1.0 and 0.0 <= p.x <= 1.0)
                self.assertAlmostEqual((y + 0.5) / 32, p.y)
                self.assertAlmostEqual((x + 0.5) / 32, p.x)
                if str(k) in by_label:
                    self.assertAlmostEqual(p.y, by_label[str(k)].position.y)
                    self.assertAlmostEqual(p.x, by_label[str(k)].position.x)
                self.assertAlmostEqual(p.y, pp[0])
                self.assertAlmostEqual(p.x, pp[1])
            self.assertIsNone(probe.positions[-1])
            self.assertIsNone(tc.instrument.probe_position)
            self.assertFalse(tc.camera_hardware_source.is_playing)
            # usim: the central (vBF) disc intensity anti-correlates with HAADF
            haadf = numpy.array([survey_xdata.data[y, x] for y, x in result.visited])
            r = float(numpy.corrcoef(numpy.array(result.values), haadf)[0, 1])
            self.assertLess(r, -0.5, f"vBF vs HAADF correlation {r:.2f}")


class TestControl(SwiftTestCase):

    @pytest.mark.slow
    def test_menu_action_runs_on_selected_survey_and_stop_ends_within_one_step(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            handler.seeds.value = "6"
            handler.steps.value = "200"
            survey_display_item = acquire_survey(tc, handler)
            handler.controller.survey_display_item = None  # the action must use the selection, not the panel's survey
            select(dc, survey_display_item)
            self.assertEqual(survey_display_item, dc.selected_display_item)
            dc.perform_action(extension_module.RUN_ACTION_ID)
            self.assertEqual("running", handler.controller.status.state, handler.message.value)
            instrument = handler.controller.instrument
            pump(dc, lambda: handler.controller.status.step >= 8, 60, "steps after the seeds")
            measured_at_stop = instrument.recorded_count
            step_ms = handler.controller.status.step_ms
            t0 = time.perf_counter()
            handler.stop_clicked()
            self.assertEqual("stopping", handler.controller.status.state)
            thread = handler.controller.thread
            thread.join(60)  # a hang guard only: the behaviour is the count of points below
            elapsed = time.perf_counter() - t0
            self.assertFalse(thread.is_alive())
            pump(dc, lambda: handler.controller.status.state == "idle", 30, "idle")
            print(f"stop: the loop ended {elapsed:.2f} s after Stop (last step {step_ms:.0f} ms)")
            self.assertLessEqual(instrument.recorded_count - measured_at_stop, 1)  # at most the step in flight
            self.assertEqual(instrument.recorded_count, len(handler.controller.result.visited))
            self.assertTrue(handler.controller.result.stopped)
            self.assertIn("Stopped", handler.message.value)
            self.assertIsNone(tc.instrument.probe_position)
            self.assertFalse(tc.camera_hardware_source.is_playing)
            pump(dc, lambda: not item(tc, live_items.PREDICTION_TITLE).is_live, 10, "the live state to end")
            # the raw-pattern sequence is trimmed to what was measured
            self.assertEqual(len(handler.controller.result.visited), item(tc, live_items.PATTERNS_TITLE).data_shape[0])

    @pytest.mark.slow
    def test_pause_and_resume(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            handler.seeds.value = "4"
            handler.steps.value = "200"
            acquire_survey(tc, handler)
            self.assertTrue(handler.start(), handler.message.value)
            pump(dc, lambda: handler.controller.status.step >= 2, 60, "seed points")
            instrument, thread = handler.controller.instrument, handler.controller.thread
            count_at_pause = instrument.recorded_count
            handler.pause_clicked()
            self.assertEqual("paused", handler.controller.status.state)
            self.assertEqual("Resume", handler.pause_text.value)
            # the loop finishes the step in flight, then waits at the pause gate: seen there twice, same count
            pump(dc, settled_at_pause_gate(thread, instrument), 120, "the loop to wait at the pause gate")
            count = instrument.recorded_count
            self.assertLessEqual(count - count_at_pause, 1)  # at most the step in flight
            for _ in range(20):  # UI ticks while paused: nothing is measured, the loop stays at the gate
                dc.periodic()
            self.assertEqual(count, instrument.recorded_count)
            self.assertTrue(waiting_at_pause_gate(thread))
            self.assertEqual("paused", handler.controller.status.state)
            # no dose on the last point while paused: the camera stopped and the probe parked (released here)
            self.assertFalse(tc.camera_hardware_source.is_playing)
            self.assertIsNone(tc.instrument.probe_position)
            handler.pause_clicked()
            self.assertEqual("running", handler.controller.status.state)
            pump(dc, lambda: instrument.recorded_count > count, 60, "resumed")
            handler.stop_clicked()
            pump(dc, lambda: handler.controller.status.state == "idle", 30, "idle")
            self.assertIsNone(tc.instrument.probe_position)
            dc.periodic()
            dc.periodic()  # the tick on which the run's probe guard is disposed
            self.assertIsNone(tc.instrument.probe_position)

    def test_stale_probe_echo_after_release_is_undone(self) -> None:
        """Swift's probe graphic (nion.instrumentation ProbeView) can write a measured position back onto the probe
        from the UI thread after the worker released it (about 1 pause/resume run in 4 ended with the probe on the
        sample). Here the echo is what the graphic's change handler does: set that position on the UI thread."""
        with self.swift() as (tc, panel):
            from nion.utils import Geometry
            from nionswift_plugin.dkl4dstem_swift import swift_instrument
            acquire_survey(tc, panel.handler)
            survey = swift_instrument.survey_from_xdata(panel.handler.controller.survey_display_item.data_item.xdata)
            instrument = swift_instrument.SwiftInstrument(tc.instrument, tc.scan_hardware_source,
                                                          tc.camera_hardware_source, survey=survey)
            worker = threading.Thread(target=lambda: [instrument.measure(23, 16), instrument.release_after_current()])
            worker.start()
            worker.join(30)
            self.assertFalse(worker.is_alive())
            self.assertIsNone(tc.instrument.probe_position)
            measured = swift_instrument.probe_point(23, 16, survey.shape)
            tc.instrument.probe_position = measured  # the stale echo
            self.assertIsNone(tc.instrument.probe_position, "a stale echo of a measured position put the probe back")
            self.assertEqual(1, instrument.probe_echoes_undone)
            users = Geometry.FloatPoint(y=0.3, x=0.6)
            tc.instrument.probe_position = users  # someone else's move is left alone
            self.assertEqual(users, tc.instrument.probe_position)
            instrument.dispose()
            tc.instrument.probe_position = measured  # after dispose nothing is guarded
            self.assertEqual(measured, tc.instrument.probe_position)
            tc.instrument.probe_position = None

    def test_park_after_run_at_mark(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            handler.seeds.value = "3"
            handler.steps.value = "0"
            acquire_survey(tc, handler)
            handler.after_run_index.value = 1
            self.assertFalse(handler.start())
            self.assertIn("park", handler.message.value)
            handler.mark_park_clicked()
            mark = handler.find_mark(panel_survey.PARK_LABEL)
            mark.position = (0.25, 0.75)
            session_path = os.path.join(os.getcwd(), "run1.h5")
            handler.session_path.value = session_path
            self.assertTrue(handler.start(), handler.message.value)
            pump(dc, lambda: handler.controller.status.state == "idle", 60, "run end")
            from dkl4dstem.session.store import read_session
            session = read_session(session_path)
            self.assertEqual(3, len(session.positions))
            self.assertEqual(item(tc, live_items.PATTERNS_TITLE).data_shape[1:], session.patterns.shape[1:])
            self.assertAlmostEqual(0.25, tc.instrument.probe_position.y)
            self.assertAlmostEqual(0.75, tc.instrument.probe_position.x)
            self.assertIn("parked", handler.message.value)
            self.assertFalse(handler.start(), "an existing session file is never overwritten")
            self.assertIn("exists", handler.message.value)
            tc.instrument.probe_position = None

    def test_vacuum_reference_recorded_at_mark(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            acquire_survey(tc, handler)
            handler.acquire_reference_clicked()  # first click places the mark and explains
            self.assertIsNotNone(handler.find_mark(panel_survey.VACUUM_LABEL))
            self.assertIsNone(handler.controller.reference)
            handler.acquire_reference_clicked()
            pump(dc, lambda: handler.controller.reference is not None and handler.idle.value, 30, "reference")
            self.assertEqual(2, handler.controller.reference.ndim)
            self.assertIn("Reference:", handler.reference_text.value)
            item(tc, "DKL vacuum reference")
            self.assertIsNone(tc.instrument.probe_position)
            self.assertFalse(tc.camera_hardware_source.is_playing)


class TestRefusals(SwiftTestCase):

    def test_menu_action_refuses_1d_and_3d_and_foreign_images_with_a_message(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            acquire_survey(tc, handler)
            cases = {
                "1d": (DataItem.new_data_item(numpy.arange(32, dtype=numpy.float32)), "not a 2D image"),
                "3d": (DataItem.new_data_item(numpy.ones((4, 32, 32), dtype=numpy.float32)), "not a 2D image"),
                "2d without scan": (DataItem.new_data_item(numpy.random.default_rng(0).random((32, 32))), "not recorded by a scan device"),
            }
            for name, (data_item, expected) in cases.items():
                tc.document_model.append_data_item(data_item)
                display_item = tc.document_model.get_display_item_for_data_item(data_item)
                select(dc, display_item)
                self.assertEqual(display_item, dc.selected_display_item, name)
                dc.perform_action(extension_module.RUN_ACTION_ID)
                pump(dc, lambda: True, 1)
                self.assertIn(expected, handler.message.value, name)
                self.assertEqual("idle", handler.controller.status.state, name)
                self.assertIsNone(handler.controller.experiment, name)
            # a survey that no longer matches the scan context (FOV changed since)
            survey = handler.controller.survey_display_item
            fp = tc.scan_hardware_source.get_current_frame_parameters()
            fp.fov_nm = 32.0
            tc.scan_hardware_source.set_current_frame_parameters(fp)
            select(dc, survey)
            self.assertEqual(survey, dc.selected_display_item)
            dc.perform_action(extension_module.RUN_ACTION_ID)
            self.assertIn("does not belong to the current scan context", handler.message.value)
            self.assertIsNone(handler.controller.experiment)

    def test_invalid_entries_give_a_message_not_an_exception(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            acquire_survey(tc, handler)
            for field, text, expected in [("steps", "ten", "Steps"), ("seeds", "0", "Seed points"),
                                          ("window", "40", "window"), ("xi", "-1", "xi"),
                                          ("exposure_ms", "0", "Exposure"), ("survey_size", "3.5", "Survey size"),
                                          ("scalarizer_params", "inner_mrad=5, outer_mrad=2", "inner"),
                                          ("scalarizer_params", "radius=3", "no parameter"),
                                          ("steps", "5000", "candidate")]:
                model = getattr(handler, field)
                old = model.value
                model.value = text
                self.assertFalse(handler.start(), field)
                self.assertIn(expected, handler.message.value, field)
                self.assertIsNone(handler.controller.experiment, field)
                model.value = old
            self.assertTrue(handler.idle.value)


class TestReliability(SwiftTestCase):

    @pytest.mark.slow
    def test_closing_the_document_window_during_a_run_stops_within_one_step_and_releases_probe(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            acquire_survey(tc, handler)
            # a second window on the same document: close it mid-run
            dc2 = tc.create_secondary_document_controller(tc.document_model, auto_close=False)
            panel2 = dc2.find_dock_panel(panel_module.PANEL_ID)
            handler2 = panel2.handler
            for name in ("survey_size", "fov_nm", "exposure_ms", "binning", "window"):
                getattr(handler2, name).value = getattr(handler, name).value
            handler2.extra_config = handler.extra_config
            handler2.seeds.value = "4"
            handler2.steps.value = "200"
            self.assertTrue(handler2.start(handler.controller.survey_display_item), handler2.message.value)
            controller = handler2.controller
            pump(dc2, lambda: controller.status.step >= 6, 120, "steps")
            thread, instrument = controller.thread, controller.instrument
            at_close = spy_on_close(controller)
            at_request = instrument.recorded_count
            dc2.about_to_close("", "")  # what Qt calls when the window closes: on_close first, then close()
            self.assertFalse(thread.is_alive())
            # from the moment the window begins to close: at most the step in flight
            self.assertLessEqual(instrument.recorded_count - at_request, 1)
            self.assertLessEqual(instrument.recorded_count - at_close["count"], 1)
            print(f"window close: the loop ended {time.perf_counter() - at_close['t']:.2f} s after close() began")
            self.assertIsNone(tc.instrument.probe_position)
            self.assertFalse(tc.camera_hardware_source.is_playing)
            # the live state ends in the window that stays open
            pump(tc.document_controller, lambda: not item(tc, live_items.PREDICTION_TITLE).is_live, 5, "live state end")

    @pytest.mark.slow
    def test_closing_the_panel_during_a_run_stops_within_one_step_and_releases_probe(self) -> None:
        with self.swift() as (tc, panel):
            dc = tc.document_controller
            acquire_survey(tc, panel.handler)
            count_before = Panel.Panel.count
            panel2 = panel_module.DKLPanel(dc, "dkl4dstem-panel-2", {})
            handler2 = panel2.handler
            for name in ("survey_size", "fov_nm", "exposure_ms", "binning", "window"):
                getattr(handler2, name).value = getattr(panel.handler, name).value
            handler2.extra_config = panel.handler.extra_config
            handler2.seeds.value = "4"
            handler2.steps.value = "200"
            self.assertTrue(handler2.start(panel.handler.controller.survey_display_item), handler2.message.value)
            controller = handler2.controller
            pump(dc, lambda: controller.status.step >= 6, 120, "steps")
            thread, instrument = controller.thread, controller.instrument
            at_close = spy_on_close(controller)
            panel2.close()
            self.assertEqual(count_before, Panel.Panel.count)
            self.assertFalse(thread.is_alive())
            self.assertLessEqual(instrument.recorded_count - at_close["count"], 1)
            self.assertIsNone(tc.instrument.probe_position)
            self.assertFalse(tc.camera_hardware_source.is_playing)
            # queued UI tasks of the closed panel do nothing; the live state ends on the document's next call-soon
            pump(dc, lambda: not item(tc, live_items.PREDICTION_TITLE).is_live, 5, "live state end")

    @pytest.mark.slow
    def test_camera_raising_inside_measure_stops_cleanly(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            handler.seeds.value = "6"
            handler.steps.value = "20"
            acquire_survey(tc, handler)
            camera = tc.camera_hardware_source
            original = camera.grab_next_to_start
            calls = [0]

            def failing_grab(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
                calls[0] += 1
                if calls[0] > 3:
                    raise RuntimeError("simulated camera failure")
                return original(*args, **kwargs)

            camera.grab_next_to_start = failing_grab
            try:
                errors: list[BaseException] = list()
                old_hook = threading.excepthook
                threading.excepthook = lambda args: errors.append(args.exc_value)
                try:
                    self.assertTrue(handler.start(), handler.message.value)
                    pump(dc, lambda: handler.controller.status.state == "idle", 60, "failed run")
                finally:
                    threading.excepthook = old_hook
                self.assertEqual([], errors)
            finally:
                del camera.grab_next_to_start
            pump(dc, lambda: not live_dkl_items(tc), 10, "the end of the run's items")
            self.assertIn("Failed", handler.message.value)
            self.assertIn("simulated camera failure", handler.message.value)
            self.assertIsNone(tc.instrument.probe_position)
            self.assertFalse(camera.is_playing)
            self.assertTrue(handler.idle.value)
            self.assertEqual(3, item(tc, live_items.PATTERNS_TITLE).data_shape[0])  # the good frames are kept
            survey = handler.controller.survey_display_item
            # the marks exist (hidden) from Start on; excluded positions are not drawn as measured
            points = [g for g in survey.graphics if isinstance(g, Graphics.PointGraphic)
                      and g.stroke_color != survey_marks.HIDDEN_COLOR]
            self.assertEqual(3, len(points))
            measured_md = item(tc, live_items.MEASURED_TITLE).metadata[live_items.METADATA_KEY]
            self.assertEqual(3, len(measured_md["positions"]))
            self.assertGreaterEqual(len(measured_md["excluded"]), 1)


class TestLifecycle(SwiftTestCase):

    def test_extension_registers_panel_menu_and_actions_and_closes_without_leaks(self) -> None:
        panel_count = Panel.Panel.count
        with self.swift() as (tc, panel):
            dc = tc.document_controller
            self.assertIn(extension_module.RUN_ACTION_ID, Window.actions)
            self.assertIn(extension_module.ACQUIRE_ACTION_ID, Window.actions)
            self.assertEqual("Run DKL experiment on selected HAADF image", Window.actions[extension_module.RUN_ACTION_ID].action_name)
            self.assertEqual("Acquire HAADF survey", Window.actions[extension_module.ACQUIRE_ACTION_ID].action_name)
            menu = extension_module.build_menu(dc)
            titles = [menu_item.title for menu_item in menu.items if not menu_item.is_separator]
            self.assertEqual(["Run DKL experiment on selected HAADF image", "Acquire HAADF survey",
                              "Replay DKL on selected 4D data item", "Show DKL 4D-STEM panel"], titles)
            self.assertEqual("DKL 4D-STEM", panel.display_name)
            self.assertIn("uSim Scan", panel.handler.scan_names.value)
            self.assertEqual("uSim Ronchigram Camera", panel.handler.camera_names.value[panel.handler.camera_index.value])
            self.assertEqual("HAADF", panel.handler.channel_names.value[panel.handler.channel_index.value])
            # the acquire action records a survey through the scan device
            dc.perform_action(extension_module.ACQUIRE_ACTION_ID)
            pump(dc, lambda: panel.handler.controller.survey_display_item is not None and panel.handler.idle.value, 30, "survey")
            survey = panel.handler.controller.survey_display_item.data_item
            self.assertEqual((32, 32), survey.data_shape)
            self.assertEqual("usim_scan_device", survey.metadata["scan"]["hardware_source_id"])
        self.assertEqual(panel_count, Panel.Panel.count)
        self.assertNotIn(panel_module.PANEL_ID, Panel.PanelManager().panel_ids)

    @pytest.mark.slow
    def test_live_updates_are_coalesced_latest_wins_in_small_ui_tasks(self) -> None:
        with self.swift() as (tc, panel):
            dc = tc.document_controller
            survey_display_item = acquire_survey(tc, panel.handler)
            xdata = survey_display_item.data_item.xdata
            applied: list[typing.Any] = list()
            items = live_items.LiveItems(dc, survey_display_item, xdata, {"settings": {"scalarizer": "vbf"}}, "a.u.", 100,
                                         on_applied=applied.append, run=7)
            ready: list[bool] = list()
            items.prepare(lambda: ready.append(True))
            pump(dc, lambda: bool(ready), 10, "items created")
            self.assertEqual(["DKL run 7"], [g.title for g in tc.document_model.data_groups])
            self.assertEqual(4, len(items.data_group.display_items))
            self.assertTrue(all(d.is_live for d in items.items.values()))
            try:
                rng = numpy.random.default_rng(1)
                print("events: rng seed 1")

                def event(k: int) -> StepEvent:
                    maps = rng.random((32, 32))
                    return StepEvent(step=k, phase="step", position=(k // 32, k % 32), value=float(k),
                                     next_position=None, prediction=maps, uncertainty=maps, acquisition=maps,
                                     decision_seconds=0.0, training_seconds=0.0, instrument_seconds=0.0,
                                     step_seconds=0.0, n_measured=k + 1, n_total=50, best_value=float(k),
                                     best_position=(k // 32, k % 32), units="a.u.")

                events = [event(k) for k in range(50)]
                worker = threading.Thread(target=lambda: [items.post(e) for e in events])
                worker.start()
                worker.join()
                self.assertEqual(0, items.apply_count)  # nothing touched the document from the worker thread
                # fifty events: one round of updates, in pieces of one item each (marks: a few graphics per UI tick),
                # every piece with the newest state
                versions = {title: d.modified_count for title, d in items.items.items()}
                ticks = 0
                while True:
                    before = {title: d.modified_count for title, d in items.items.items()}
                    dc.periodic()
                    ticks += 1
                    changed = [t for t, d in items.items.items() if d.modified_count != before[t]]
                    self.assertLessEqual(len(changed), 1, changed)  # at most one data item per UI task
                    if (all(d.modified_count != versions[t] for t, d in items.items.items())
                            and len(items.graphics) == survey_marks.MAX_MARKS):
                        break
                    self.assertLess(ticks, 60)
                self.assertEqual(1, items.apply_count)
                self.assertEqual([events[-1]], applied)
                self.assertTrue(numpy.allclose(events[-1].prediction, items.items[live_items.PREDICTION_TITLE].data))
                self.assertEqual(survey_marks.MAX_MARKS, len(items.graphics))  # bounded, whatever n is
                self.assertEqual(50, int(numpy.count_nonzero(numpy.isfinite(items.items[live_items.MEASURED_TITLE].data))))
            finally:
                items.finish()
            pump(dc, lambda: not items.items[live_items.PREDICTION_TITLE].is_live, 10, "the live state to end")
