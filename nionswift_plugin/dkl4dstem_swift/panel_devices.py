"""The panel's scan device, camera and channel choices, kept in step with Swift's hardware sources."""
from __future__ import annotations

import gettext
import typing

from nion.utils import Model

from . import devices
from . import panel_base

_ = gettext.gettext


class DevicesMixin(panel_base.PanelBase):
    """A mixin of panel.PanelHandler: the device combo boxes (the declarative UI binds them by name)."""

    def init_devices(self) -> None:
        self.__scan_ids: list[str] = list()
        self.__camera_ids: list[str] = list()
        self.scan_names = Model.PropertyModel[list[str]](list())
        self.scan_index = Model.PropertyModel[int](0)
        self.camera_names = Model.PropertyModel[list[str]](list())
        self.camera_index = Model.PropertyModel[int](0)
        self.channel_names = Model.PropertyModel[list[str]](["HAADF"])
        self.channel_index = Model.PropertyModel[int](0)
        self.preferred_device_ids: tuple[str | None, str | None] = (None, None)

    # devices

    def refresh_devices(self) -> None:
        scans = devices.scan_devices()
        cams = devices.cameras()
        old_scan = self.scan_id if self.__scan_ids else self.preferred_device_ids[0]  # else the remembered one
        old_camera = self.camera_id if self.__camera_ids else self.preferred_device_ids[1]
        scan_id: str | None
        camera_id: str | None
        self.__scan_ids = [hs.hardware_source_id for hs in scans]
        self.__camera_ids = [hs.hardware_source_id for hs in cams]
        self.scan_names.value = [hs.display_name for hs in scans] or [_("(no scan device)")]
        self.camera_names.value = [hs.display_name for hs in cams] or [_("(no camera)")]
        default_scan = devices.default_scan_device()
        default_camera = devices.default_camera()
        if old_scan in self.__scan_ids:
            scan_id = old_scan
        else:
            scan_id = default_scan.hardware_source_id if default_scan else None
        if old_camera in self.__camera_ids:
            camera_id = old_camera
        else:
            camera_id = default_camera.hardware_source_id if default_camera else None
        self.scan_index.value = self.__scan_ids.index(scan_id) if scan_id in self.__scan_ids else 0
        self.camera_index.value = self.__camera_ids.index(camera_id) if camera_id in self.__camera_ids else 0
        self.scan_changed()

    @property
    def scan_id(self) -> str | None:
        index = self.scan_index.value or 0
        return self.__scan_ids[index] if 0 <= index < len(self.__scan_ids) else None

    @property
    def camera_id(self) -> str | None:
        index = self.camera_index.value or 0
        return self.__camera_ids[index] if 0 <= index < len(self.__camera_ids) else None

    def scan_changed(self, widget: typing.Any = None, current_index: int | None = None) -> None:
        scan = devices.find_hardware_source(self.scan_id)
        names = devices.channel_names(scan) if scan else ["HAADF"]
        old = (self.channel_names.value or [""])[self.channel_index.value or 0] if self.channel_names.value else "HAADF"
        self.channel_names.value = names
        upper = [n.upper() for n in names]
        for wanted in (old.upper(), "HAADF"):
            if wanted in upper:
                self.channel_index.value = upper.index(wanted)
                break
        else:
            self.channel_index.value = 0
