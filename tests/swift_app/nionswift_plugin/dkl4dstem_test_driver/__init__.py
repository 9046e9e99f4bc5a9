"""Test-only Swift plug-in: when DKL4DSTEM_SWIFT_DRIVER names a Python file, run its main(ctx) on a background
thread once the first document window exists. UI work is marshalled onto the UI thread with ctx.call(fn).
Any failure exits the process with a non-zero code instead of hanging. Not shipped: it lives under tests/."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import time
import traceback
import typing

ENV_SCRIPT = "DKL4DSTEM_SWIFT_DRIVER"
ENV_OUT = "DKL4DSTEM_SWIFT_OUT"


class DriverContext:
    def __init__(self, app: typing.Any, out_dir: str) -> None:
        self.app = app
        self.out_dir = out_dir

    @property
    def document_controller(self) -> typing.Any:
        return self.app.document_controllers[0]

    def call(self, fn: typing.Callable[[], typing.Any], timeout_s: float = 60.0) -> typing.Any:
        """Run fn on the UI thread and return its result (or raise its exception here)."""
        done = threading.Event()
        box: dict[str, typing.Any] = dict()

        def task() -> None:
            try:
                box["result"] = fn()
            except BaseException as e:  # re-raised on the driver thread
                box["error"] = e
            finally:
                done.set()

        self.document_controller.queue_task(task)
        if not done.wait(timeout_s):
            raise TimeoutError(f"UI task did not run within {timeout_s} s")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def wait_until(self, predicate: typing.Callable[[], bool], timeout_s: float, what: str = "") -> None:
        start = time.time()
        while not self.call(predicate):
            if time.time() - start > timeout_s:
                raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.1)

    def screenshot(self, path: str) -> None:
        """Grab the document window in-process (works under Xvfb and offscreen)."""
        from PySide6 import QtWidgets

        def grab() -> None:
            windows = [w for w in QtWidgets.QApplication.topLevelWidgets() if isinstance(w, QtWidgets.QMainWindow) and w.isVisible()]
            if not windows:
                raise RuntimeError("no visible main window to grab")
            window = max(windows, key=lambda w: w.width() * w.height())
            if not window.grab().save(path):
                raise RuntimeError(f"could not save {path}")
        self.call(grab)

    def resize_main_window(self, width: int, height: int) -> None:
        from PySide6 import QtWidgets

        def resize() -> None:
            for w in QtWidgets.QApplication.topLevelWidgets():
                if isinstance(w, QtWidgets.QMainWindow) and w.isVisible():
                    w.move(0, 0)
                    w.resize(width, height)
        self.call(resize)

    def quit(self) -> None:
        """Close the windows the normal way (Swift saves and shuts plug-ins down); the Qt loop then ends.

        Queued with a zero timer so that it runs outside the window's periodic task processing."""
        from PySide6 import QtCore
        self.call(lambda: QtCore.QTimer.singleShot(0, self.app.exit))


def _fail(message: str) -> None:
    """Say why, dump every thread's stack (what the UI thread was stuck in), exit non-zero: never hang."""
    stream = sys.__stderr__  # Swift replaces sys.stderr with a catcher that has no file descriptor
    try:
        import faulthandler
        stream.write(message + "\nstacks of all threads:\n")
        stream.flush()
        faulthandler.dump_traceback(file=stream, all_threads=True)
        stream.flush()
    finally:
        os._exit(3)


def _drive(script: str, out_dir: str) -> None:
    try:
        from nion.swift import Application
        start = time.time()
        while getattr(Application, "app", None) is None or not Application.app.document_controllers:
            if time.time() - start > 120:
                _fail("driver: no document window within 120 s")
            time.sleep(0.2)
        spec = importlib.util.spec_from_file_location("dkl4dstem_driver_script", script)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main(DriverContext(Application.app, out_dir))
    except BaseException:
        _fail("driver failed:\n" + traceback.format_exc())


def _warm_up_qt_enums() -> None:
    """Touch the Qt enums that nionui's render threads use, on the main thread first.

    PySide6 creates enum types lazily; the first use from two threads at once has failed here with
    "type object 'PySide6.QtGui.QGradient' has no attribute 'Preset'" in a render thread (nionui PyQtProxy)."""
    try:
        from PySide6 import QtCore, QtGui
        QtGui.QBrush(QtGui.QColor(QtCore.Qt.GlobalColor.transparent))
        getattr(QtGui.QGradient, "Preset", None)
    except Exception:
        pass


def run() -> None:
    """Called by Swift after all plug-ins are loaded."""
    script = os.environ.get(ENV_SCRIPT)
    if not script:
        return
    _warm_up_qt_enums()
    logging.getLogger(__name__).info("DKL test driver: running %s", script)
    out_dir = os.environ.get(ENV_OUT, os.getcwd())
    threading.Thread(target=_drive, args=(script, out_dir), name="dkl-test-driver", daemon=True).start()
