"""The Swift tests' shared harness: a document window with the DKL extension on usim, and waits that pump the UI thread.

Imported by the tests/test_swift_*.py files (its name does not start with test_, so pytest does not collect it).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import typing
import unittest

from nion.instrumentation.test import AcquisitionTestContext
from nion.swift.model import DataItem
from nion.swift.test import TestContext
from nion.usim_device import DeviceConfiguration

from nionswift_plugin.dkl4dstem_swift import extension as extension_module
from nionswift_plugin.dkl4dstem_swift import live_items
from nionswift_plugin.dkl4dstem_swift import panel as panel_module
from nionswift_plugin.dkl4dstem_swift import run_controller


# few training iterations and a small network: the tests check the plumbing, not the model quality
FAST_CONFIG = {"initial_iterations": 40, "update_iterations": 5, "refit_every": 1000, "refit_iterations": 20,
               "hidden": (32, 16)}


def pump(document_controller: typing.Any, predicate: typing.Callable[[], bool], timeout_s: float, what: str = "") -> float:
    """Run the UI thread's periodic() until predicate() holds; return the seconds it took."""
    start = time.perf_counter()
    while not predicate():
        document_controller.periodic()
        if time.perf_counter() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.005)
    document_controller.periodic()
    return time.perf_counter() - start


class SwiftTestCase(unittest.TestCase):
    """Each test runs in its own temporary directory (AcquisitionTestContext recreates ./test_data)."""

    def setUp(self) -> None:
        self._old_cwd = os.getcwd()
        self._tmp = tempfile.TemporaryDirectory()
        os.chdir(self._tmp.name)
        AcquisitionTestContext.begin_leaks()
        self._test_setup = TestContext.TestSetup()

    def tearDown(self) -> None:
        self._test_setup = typing.cast(typing.Any, None)
        os.chdir(self._old_cwd)
        self._tmp.cleanup()
        AcquisitionTestContext.end_leaks(self)

    @contextlib.contextmanager
    def swift(self, *, is_app: bool = True) -> typing.Iterator[tuple[typing.Any, panel_module.DKLPanel]]:
        """usim + a document window with the DKL extension loaded and its panel found."""
        extension = extension_module.DKLExtension(None)
        try:
            with AcquisitionTestContext.AcquisitionTestContext(DeviceConfiguration.AcquisitionContextConfiguration(),
                                                               is_app=is_app) as tc:
                # the extension imports the engine in the background; tests start runs synchronously
                self.assertTrue(wait_for_engine(120), "the engine did not load")
                panel = tc.document_controller.find_dock_panel(panel_module.PANEL_ID)
                assert isinstance(panel, panel_module.DKLPanel)
                handler = panel.handler
                handler.survey_size.value = "32"
                handler.fov_nm.value = "16"
                handler.pixel_time_us.value = "1"
                handler.exposure_ms.value = "2"
                handler.binning.value = "8"
                handler.window.value = "8"
                handler.extra_config = dict(FAST_CONFIG)
                yield tc, panel
        finally:
            extension.close()


def acquire_survey(tc: typing.Any, handler: panel_module.PanelHandler) -> typing.Any:
    assert handler.acquire_survey(), handler.message.value
    pump(tc.document_controller, lambda: handler.controller.survey_display_item is not None and handler.idle.value, 30, "survey")
    return handler.controller.survey_display_item


def wait_for_engine(timeout_s: float) -> bool:
    end = time.perf_counter() + timeout_s
    while run_controller.ENGINE_LOADING.is_set():
        if time.perf_counter() > end:
            return False
        time.sleep(0.05)
    return True


def select(dc: typing.Any, display_item: typing.Any) -> None:
    """Show the item in the first display panel and focus it: the window's selection, as a click would."""
    display_panel = dc.workspace_controller.display_panels[0]
    dc.selected_display_panel = display_panel
    display_panel.set_display_panel_display_item(display_item)


def item(tc: typing.Any, title: str, run: int | None = None) -> DataItem.DataItem:
    """The item of that kind of the given run (default: the newest run), e.g. 'DKL prediction #2'."""
    if title.startswith("DKL") and title not in ("DKL vacuum reference",):
        if run is None:
            run = live_items.next_run_number(tc.document_model) - 1
        title = live_items.run_title(title, run)
    items = [d for d in tc.document_model.data_items if d.title == title]
    assert len(items) == 1, (title, [d.title for d in tc.document_model.data_items])
    return items[0]


def live_dkl_items(tc: typing.Any) -> list[str]:
    return [d.title for d in tc.document_model.data_items if d.is_live and d.title.startswith("DKL")]


class RecordingProbe:
    """Every probe position the STEM controller was set to (any thread)."""

    def __init__(self, stem_controller: typing.Any) -> None:
        self.positions: list[typing.Any] = list()
        self.__lock = threading.Lock()
        self.__listener = stem_controller.probe_state_changed_event.listen(self.__changed)

    def __changed(self, probe_state: str, probe_position: typing.Any) -> None:
        with self.__lock:
            self.positions.append(probe_position)

    def close(self) -> None:
        self.__listener.close()
        self.__listener = typing.cast(typing.Any, None)
