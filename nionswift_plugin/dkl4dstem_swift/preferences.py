"""Panel settings kept across Swift restarts, in Swift's own preferences.

Nion Swift 16.16 stores `ui.get_persistent_string / set_persistent_string` values through the application's
PersistenceHandler in its application data file (the same store as Swift's other preferences). One JSON string under
one key; unknown or bad values are ignored, so an old or hand-edited entry never stops the panel from opening.
"""
from __future__ import annotations

import json
import logging
import typing

_logger = logging.getLogger(__name__)

KEY = "dkl4dstem/panel_settings"
VERSION = 1


def load(ui: typing.Any) -> dict[str, typing.Any]:
    try:
        text = ui.get_persistent_string(KEY, "")
        values = json.loads(text) if text else dict()
    except Exception as e:  # a broken entry: start from the defaults
        _logger.warning("DKL panel settings could not be read (%s); using defaults", e)
        return dict()
    if not isinstance(values, dict) or values.get("version") != VERSION:
        return dict()
    return {k: v for k, v in values.items() if k != "version"}


def save(ui: typing.Any, values: typing.Mapping[str, typing.Any]) -> None:
    try:
        ui.set_persistent_string(KEY, json.dumps({"version": VERSION, **values}))
    except Exception as e:
        _logger.warning("DKL panel settings could not be saved: %s", e)
