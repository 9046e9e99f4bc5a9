"""ui_gate on the real Swift model: while the plug-in changes the data panel's item list, no thumbnail thread may
run (the lock-order hang described in ui_gate's docstring); the held computations run afterwards."""
from __future__ import annotations

import concurrent.futures
import typing

import numpy

from nion.swift import Thumbnails
from nion.swift.model import DataItem

from nionswift_plugin.dkl4dstem_swift import ui_gate

from swift_support import SwiftTestCase, pump


class TestThumbnailGate(SwiftTestCase):

    def test_thumbnails_of_new_items_are_held_during_the_list_changes_and_computed_after(self) -> None:
        with self.swift() as (tc, panel):
            dc = tc.document_controller
            real_executor = Thumbnails.ThumbnailSource._executor
            seen: list[dict[str, typing.Any]] = list()
            sources: list[typing.Any] = list()

            def append_item() -> None:
                data_item = DataItem.new_data_item(numpy.arange(64, dtype=numpy.float32).reshape(8, 8))
                dc.document_model.append_data_item(data_item)
                display_item = dc.document_model.get_display_item_for_data_item(data_item)
                # what the data panel's new cell does: its thumbnail source submits the first computation
                source = Thumbnails.ThumbnailManager().thumbnail_source_for_display_item(dc.ui, display_item)
                sources.append(source)
                future = source._ThumbnailSource__recompute_future
                seen.append({"future": future, "running": future.running(), "done": future.done(),
                             "executor_swapped": Thumbnails.ThumbnailSource._executor is not real_executor})

            finished: list[bool] = list()
            ui_gate.when_idle(dc, [append_item, append_item, append_item], on_done=lambda: finished.append(True))
            pump(dc, lambda: bool(finished), 30, "the three list changes")
            self.assertEqual(3, len(seen))
            for step in seen:  # during each change: held, neither running nor done
                self.assertTrue(step["executor_swapped"], step)
                self.assertFalse(step["running"] or step["done"], step)
            self.assertIs(real_executor, Thumbnails.ThumbnailSource._executor)  # restored after the last change
            concurrent.futures.wait([s["future"] for s in seen], timeout=30)
            for step, source in zip(seen, sources):
                self.assertTrue(step["future"].done())
                self.assertIsNone(step["future"].exception())
                self.assertIsNotNone(source.thumbnail_data)  # computed after the changes

    def test_a_cancelled_sequence_releases_the_held_thumbnails(self) -> None:
        with self.swift() as (tc, panel):
            dc = tc.document_controller
            real_executor = Thumbnails.ThumbnailSource._executor
            cancel = {"now": False}
            ran: list[int] = list()

            def step() -> bool:
                ran.append(1)
                cancel["now"] = True
                return False  # not done: would run again on the next tick

            ui_gate.when_idle(dc, [step], cancelled=lambda: cancel["now"])
            pump(dc, lambda: Thumbnails.ThumbnailSource._executor is real_executor, 10, "the executor back")
            self.assertEqual([1], ran)
            self.assertFalse(ui_gate.thumbnails_busy() and ui_gate._deferral.held is not None)

    def test_a_single_list_change_holds_the_thumbnail_it_starts(self) -> None:
        with self.swift() as (tc, panel):
            dc = tc.document_controller
            real_executor = Thumbnails.ThumbnailSource._executor
            data_item = DataItem.new_data_item(numpy.ones((8, 8), dtype=numpy.float32))
            with ui_gate.thumbnails_held():
                dc.document_model.append_data_item(data_item)
                display_item = dc.document_model.get_display_item_for_data_item(data_item)
                source = Thumbnails.ThumbnailManager().thumbnail_source_for_display_item(dc.ui, display_item)
                future = source._ThumbnailSource__recompute_future
                self.assertFalse(future.running() or future.done())
            self.assertIs(real_executor, Thumbnails.ThumbnailSource._executor)
            concurrent.futures.wait([future], timeout=30)
            self.assertTrue(future.done())
            self.assertIsNotNone(source.thumbnail_data)
