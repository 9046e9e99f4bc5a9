"""The panel's "Start from" choice: a second run on usim starts from the session a first run left (transfer.py)."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("nion.swift")
pytest.importorskip("nion.usim_device")

from swift_support import SwiftTestCase, acquire_survey, pump  # noqa: E402  (the plug-in tests' harness)


class TestStartFromEarlierSession(SwiftTestCase):

    @pytest.mark.slow
    def test_second_run_starts_from_the_first_runs_model_without_seed_points(self) -> None:
        with self.swift() as (tc, panel):
            handler = panel.handler
            dc = tc.document_controller
            handler.set_scalarizer("vbf")
            handler.seeds.value = "5"
            handler.steps.value = "6"
            session = os.path.join(os.getcwd(), "first.h5")
            handler.session_path.value = session
            acquire_survey(tc, handler)
            self.assertTrue(handler.start(), handler.message.value)
            pump(dc, lambda: handler.controller.status.state == "idle", 150, "first run")
            self.assertIsNone(handler.controller.result.error)
            handler.session_path.value = ""
            handler.seeds.value = "0"
            # refused with a message, nothing measured: no such session, or a model for another window
            for field, text, expected in [("init_from", os.path.join(os.getcwd(), "none.h5"), "no such file"),
                                          ("window", "10", "window")]:
                model = getattr(handler, field)
                old = model.value
                handler.init_from.value = session
                model.value = text
                self.assertFalse(handler.start(), field)
                print(field, handler.message.value)
                self.assertIn(expected, handler.message.value, field)
                model.value = old
            handler.init_from.value = session
            handler.steps.value = "4"
            self.assertTrue(handler.start(), handler.message.value)
            pump(dc, lambda: handler.controller.status.state == "idle", 150, "second run")
            result = handler.controller.result
            print("second run", result.visited, result.values, result.error)
            self.assertIsNone(result.error)
            self.assertEqual(["step"] * 4, result.phases)  # every position chosen by the transferred model
