from __future__ import annotations

import os

import pytest

from dkl4dstem.runtime import ensure_threads_configured

ensure_threads_configured()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than about 5 s (deselect with -m 'not slow')")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def graphene_path() -> str:
    """The abTEM-simulated Si-doped graphene shipped in resources/ (see resources/README.md)."""
    return os.path.join(REPO, "resources", "graphene_si.npz")

