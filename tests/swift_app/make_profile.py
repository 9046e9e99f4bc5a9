"""Create a Nion Swift profile with one project, marked last-used, so the real app opens without the
"Choose Project" dialog. Usage: python make_profile.py DATA_DIR PROJECT_DIR
(DATA_DIR is where Qt keeps Swift's data: $HOME/.local/share/Nion/Nion Swift on Linux)."""
from __future__ import annotations

import json
import pathlib
import sys
import uuid

from nion.swift.model import FileStorageSystem
from nion.swift.model import Profile


def make_profile(data_dir: pathlib.Path, project_dir: pathlib.Path) -> pathlib.Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    profile_path = data_dir / "Profile.nsproj"
    profile_path.write_text(json.dumps({"version": FileStorageSystem.PROFILE_VERSION, "uuid": str(uuid.uuid4())}), "utf-8")
    storage_system = FileStorageSystem.make_file_persistent_storage_system(profile_path)
    storage_system.load_properties()
    cache_dir = data_dir / "Cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    profile = Profile.Profile(storage_system=storage_system, cache_dir_path=cache_dir)
    profile.read_profile()
    project_reference = profile.create_project(project_dir, "DKL test project")
    assert project_reference is not None
    profile.last_project_reference = project_reference.uuid
    profile.close()
    return profile_path


if __name__ == "__main__":
    print(make_profile(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])))
