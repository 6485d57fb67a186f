"""Suite-wide rules: in CI (CI=true) a skipped test is a failure, whatever skipped it."""

from __future__ import annotations

import pytest

from .needs import in_ci


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """CI promised every tool: a skip there means a test that did not run, so the run fails."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if in_ci() and skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Say why a green-looking CI run failed."""
    skipped = terminalreporter.stats.get("skipped", [])
    if in_ci() and skipped:
        terminalreporter.write_line(f"CI: {len(skipped)} test(s) skipped; skips are failures in CI", red=True)
