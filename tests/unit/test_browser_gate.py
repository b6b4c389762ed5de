"""The browser fixture without a browser: skipped with the reason, except under CI=true, where the
run fails (a CI run whose XSS corpus and widget tests never ran must not pass)."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

TINY = '''
from tests.conftest import browser  # noqa: F401 - the fixture under test


def test_needs_a_browser(browser):
    pass
'''


def run_tiny(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """pytest, in a subprocess, on one test that asks for the browser, with no Chromium there."""
    (tmp_path / "test_tiny.py").write_text(TINY)
    full_env = {k: v for k, v in os.environ.items() if k != "CI"}
    full_env.update(PULSE_TEST_CHROMIUM=str(tmp_path / "no-chromium"), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_tiny.py")],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


def test_a_missing_browser_fails_the_run_under_ci(tmp_path):
    result = run_tiny(tmp_path, CI="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout and "skipped" not in result.stdout
    assert f"CI=true: browser tests need Debian's Chromium at {tmp_path / 'no-chromium'}" in result.stdout


def test_a_missing_browser_skips_with_the_reason_elsewhere(tmp_path):
    result = run_tiny(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert f"browser tests need Debian's Chromium at {tmp_path / 'no-chromium'}" in result.stdout
