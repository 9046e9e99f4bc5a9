from __future__ import annotations

import os

import pytest

from dkl4dstem.runtime import ensure_threads_configured

ensure_threads_configured()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than about 5 s (deselect with -m 'not slow')")


# Slow tests in two files another branch was editing when the tiers were set (issue 14): marked here so that the fast
# tier is what it should be. When merging, move each into an @pytest.mark.slow in its file and delete this set.
SLOW_IN_FILES_UNDER_EDIT = {
    "test_swift_run_behaviour.py::TestStop::test_stop_acts_without_the_ui_thread_at_most_one_more_point_under_ui_load",
    "test_swift_run_behaviour.py::TestRuns::test_runs_are_numbered_grouped_and_the_display_panels_follow_the_current_run",
    "test_swift_run_behaviour.py::TestRefusalsBeforeDose::"
    "test_a_scalarizer_that_gives_nothing_stops_after_three_seed_points_with_the_reason",
    "test_swift_run_behaviour.py::TestRefusalsBeforeDose::test_bragg_distance_without_reference_is_refused_before_any_dose",
    "test_swift_plugin.py::TestReliability::"
    "test_closing_the_document_window_during_a_run_stops_within_one_step_and_releases_probe",
    "test_swift_plugin.py::TestReliability::test_closing_the_panel_during_a_run_stops_within_one_step_and_releases_probe",
    "test_swift_plugin.py::TestReliability::test_camera_raising_inside_measure_stops_cleanly",
    "test_swift_plugin.py::TestControl::test_pause_and_resume",
    "test_swift_plugin.py::TestLifecycle::test_live_updates_are_coalesced_latest_wins_in_small_ui_tasks",
    "test_swift_plugin.py::TestControl::test_menu_action_runs_on_selected_survey_and_stop_ends_within_one_step",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if f"{item.path.name}::{item.nodeid.split('::', 1)[-1]}" in SLOW_IN_FILES_UNDER_EDIT:
            item.add_marker(pytest.mark.slow)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def graphene_path() -> str:
    """The abTEM-simulated Si-doped graphene shipped in resources/ (see resources/README.md)."""
    return os.path.join(REPO, "resources", "graphene_si.npz")

