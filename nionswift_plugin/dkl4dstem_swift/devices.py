"""Swift's scan devices and cameras: which there are, which to use by default, and one by its id."""
from __future__ import annotations

import typing

from nion.instrumentation import HardwareSource


def hardware_sources() -> typing.Sequence[typing.Any]:
    return list(HardwareSource.HardwareSourceManager().hardware_sources)


def scan_devices() -> list[typing.Any]:
    return [hs for hs in hardware_sources() if hs.features.get("is_scanning", False)]


def cameras() -> list[typing.Any]:
    return [hs for hs in hardware_sources() if hs.features.get("is_camera", False)]


def channel_names(scan: typing.Any) -> list[str]:
    return [str(scan.get_channel_name(i)) for i in range(scan.channel_count)]


def default_scan_device() -> typing.Any | None:
    """The scan device with a HAADF channel, else the first scan device."""
    devices = scan_devices()
    for scan in devices:
        if any(name.upper() == "HAADF" for name in channel_names(scan)):
            return scan
    return devices[0] if devices else None


def default_camera() -> typing.Any | None:
    """The ronchigram camera, else the first camera."""
    devices = cameras()
    for camera in devices:
        if camera.features.get("is_ronchigram_camera", False):
            return camera
    return devices[0] if devices else None


def find_hardware_source(hardware_source_id: str | None) -> typing.Any | None:
    if not hardware_source_id:
        return None
    return HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id(hardware_source_id)
