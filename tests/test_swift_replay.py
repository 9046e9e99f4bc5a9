"""Swift: "Replay DKL on selected 4D data item", headless on the real Swift model (nion.ui TestUI)."""
from __future__ import annotations

import os
import time

import numpy
import pytest

pytest.importorskip("nion.swift")
pytest.importorskip("nion.usim_device")

from nion.data import Calibration, DataAndMetadata  # noqa: E402
from nion.swift.model import DataItem  # noqa: E402
from swift_support import FAST_CONFIG, SwiftTestCase, pump, select  # noqa: E402

from dkl4dstem.data.diffraction import DetectorCalibration  # noqa: E402
from dkl4dstem.scalarizers import get_scalarizer  # noqa: E402
from nionswift_plugin.dkl4dstem_swift import live_items, replay_item, survey_marks  # noqa: E402

GRAPHENE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "graphene_si.npz")


def add_4d_item(document_model, title: str = "graphene 4D"):  # type: ignore[no-untyped-def]
    """The abTEM graphene scan as a Swift 4D item: scan in nm, camera in mrad, convergence angle in radians."""
    with numpy.load(GRAPHENE) as npz:
        data, mrad = npz["data"], float(npz["mrad_per_px"])
    scan = Calibration.Calibration(0.0, 0.05, "nm")
    camera = Calibration.Calibration(-20 * mrad, mrad, "mrad")
    xdata = DataAndMetadata.new_data_and_metadata(
        data, dimensional_calibrations=[scan, scan, camera, camera],
        data_descriptor=DataAndMetadata.DataDescriptor(False, 2, 2),
        metadata={"instrument": {"high_tension": 60000.0, "ConvergenceAngle": 0.030}})
    data_item = DataItem.new_data_item(xdata)
    data_item.title = title
    document_model.append_data_item(data_item)
    return data_item, data, mrad


class TestReplayOnDataItem(SwiftTestCase):

    def test_replay_runs_on_a_4d_item_with_its_calibrations_and_a_virtual_adf_survey(self) -> None:
        with self.swift() as (tc, panel):
            handler, dc = panel.handler, tc.document_controller
            handler.seeds.value, handler.steps.value = "5", "6"
            handler.extra_config = dict(FAST_CONFIG)
            handler.set_scalarizer("com_magnitude")  # mrad on the item's own camera calibration
            data_item, data, mrad = add_4d_item(tc.document_model)
            select(dc, tc.document_model.get_display_item_for_data_item(data_item))
            dc.perform_action(replay_item.REPLAY_ACTION_ID)
            run = replay_item._runs[id(dc)]
            print("replay started:", handler.message.value, run.instrument.calibration_sources)
            pump(dc, lambda: run.result is not None and "finished" in str(handler.message.value), 180, "replay end")
            self.assertIsNone(run.error)
            result = run.result
            self.assertEqual(11, len(result.visited))
            self.assertEqual("mrad", result.units)
            self.assertEqual(pytest.approx(mrad), run.instrument.calibration().mrad_per_px)
            self.assertEqual(pytest.approx(30.0), run.instrument.calibration().semiangle_mrad)
            self.assertEqual(pytest.approx(0.05), run.instrument.nm_per_px)
            self.assertTrue(run.instrument.calibration_sources["mrad_per_px"].startswith("Swift calibrations"))
            # every value is the scalar of the item's own pattern at that position, in mrad
            calibration = DetectorCalibration(None, mrad, 30.0)
            scalarizer = get_scalarizer("com_magnitude")
            for (y, x), value in zip(result.visited, result.values):
                self.assertAlmostEqual(scalarizer(data[y, x], calibration), value, places=5)
            survey_items = [d for d in tc.document_model.data_items if d.title.startswith("DKL survey: virtual ADF")]
            self.assertEqual(1, len(survey_items))
            self.assertEqual("nm", survey_items[0].xdata.dimensional_calibrations[1].units)
            prediction = [d for d in tc.document_model.data_items if d.title == live_items.run_title(live_items.PREDICTION_TITLE, 1)]
            # the end of a run is applied in pieces over several UI ticks: wait for its live state to end
            pump(dc, lambda: not prediction[-1].is_live, 30, "the live state to end")
            self.assertTrue(numpy.isfinite(prediction[-1].data).all())
            self.assertFalse(prediction[-1].is_live)
            graphics = run.survey_display_item.graphics
            # the survey marks exist (hidden) from Start on: the 11 measured points are the visible ones
            self.assertEqual(11, len([g for g in graphics if g.type == "point-graphic"
                                      and g.stroke_color != survey_marks.HIDDEN_COLOR]))
            run.close()

    @pytest.mark.slow
    def test_closing_the_window_during_a_replay_stops_it(self) -> None:
        with self.swift() as (tc, panel):
            handler, dc = panel.handler, tc.document_controller
            handler.seeds.value, handler.steps.value = "5", "500"
            handler.extra_config = dict(FAST_CONFIG)
            data_item, _, _ = add_4d_item(tc.document_model)
            select(dc, tc.document_model.get_display_item_for_data_item(data_item))
            dc.perform_action(replay_item.REPLAY_ACTION_ID)
            run = replay_item._runs[id(dc)]
            # a camera's frame time (5 ms) on the replay, so that 505 points take seconds whatever the machine's load
            # (set before the loop starts: the items are made on the next UI ticks, then the loop reads it)
            measure = run.instrument.measure
            run.instrument.measure = lambda y, x: (time.sleep(0.005), measure(y, x))[1]
            pump(dc, lambda: run.live_items.apply_count > 0, 120, "first live update")
            self.assertTrue(run.thread.is_alive())  # the window closes during the run
        # the context closed the window (and the extension: close_all) while the run was going
        run.thread.join(30)
        self.assertFalse(run.thread.is_alive())
        self.assertLess(len(run.result.visited), 505)
        self.assertNotIn(id(dc), replay_item._runs)

    def test_replay_refuses_an_image_with_a_message(self) -> None:
        with self.swift() as (tc, panel):
            dc = tc.document_controller
            image = DataItem.new_data_item(DataAndMetadata.new_data_and_metadata(numpy.ones((16, 16))))
            tc.document_model.append_data_item(image)
            select(dc, tc.document_model.get_display_item_for_data_item(image))
            dc.perform_action(replay_item.REPLAY_ACTION_ID)
            print(panel.handler.message.value)
            self.assertIn("not a 4D-STEM data item", str(panel.handler.message.value))
            self.assertNotIn(id(dc), replay_item._runs)
