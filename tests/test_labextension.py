"""The JupyterLab extension as installed: listed and enabled, its TypeScript unit tests, and
JupyterLab's own smoke test (``python -m jupyterlab.browser_check``) loading it without errors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LABEXT = ROOT / "labextension"
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", NO_COLOR="1", **kw.pop("env", {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_extensions_are_installed_and_enabled():
    env = dict(os.environ, NO_COLOR="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    lists = [
        subprocess.Popen(
            [str(BIN / "jupyter"), *what, "list"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        for what in (["labextension"], ["server", "extension"])
    ]
    labext, server = (p.communicate(timeout=120)[0] for p in lists)
    out = plain(labext)
    assert re.search(r"aios-lab v\S+ enabled\s+OK \(python, aios_lab\)", out), out
    out = plain(server)
    assert re.search(r"aios_lab\.jupyter_ext\s+enabled", out), out
    assert re.search(r"aios_lab\.jupyter_ext\s+OK", out), out
    built = json.loads((ROOT / "aios_lab" / "labextension" / "package.json").read_text())
    assert built["name"] == "aios-lab" and built["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    installed = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "aios-lab" / "package.json"
    if installed.exists():  # an editable install copies the build: the copy must be the current one
        load = json.loads(installed.read_text())["jupyterlab"]["_build"]["load"]
        assert load == built["jupyterlab"]["_build"]["load"], (
            "the installed labextension is older than aios_lab/labextension: run `pip install -e .` again "
            "(or `jupyter labextension develop --overwrite .` once, for a link that follows rebuilds)"
        )


def test_typescript_unit_tests():
    assert shutil.which("node") and (LABEXT / "node_modules").exists(), (
        "the TypeScript tests need node and labextension/node_modules (`pip install -e .` installs them)"
    )
    result = run([str(BIN / "jlpm"), "test"], 240, cwd=LABEXT)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    passed = re.search(r"^# pass (\d+)$", out, re.M)
    failed = re.search(r"^# fail (\d+)$", out, re.M)
    assert passed and int(passed.group(1)) >= 10 and failed and failed.group(1) == "0", out[-3000:]


def _offline_playwright(browsers: Path) -> None:
    """Let ``browser_check`` (which runs Node's playwright and ``npx playwright install chromium``) use
    Debian's chromium with no download: Node playwright is the playwright-core that pip's playwright
    wheel ships, and the browsers folder it looks in holds finished installs that point at chromium."""
    import playwright
    from jupyterlab.commands import get_app_dir

    core = Path(playwright.__file__).parent / "driver" / "package"
    modules = Path(get_app_dir()) / "browser_test" / "node_modules"
    if not (modules / "playwright").exists():
        (modules / ".bin").mkdir(parents=True, exist_ok=True)
        (modules / "playwright").symlink_to(core, target_is_directory=True)
        bin_ = modules / ".bin" / "playwright"
        if bin_.is_symlink() or bin_.exists():
            bin_.unlink()
        bin_.symlink_to(core / "cli.js")
    revisions = {b["name"]: b["revision"] for b in json.loads((core / "browsers.json").read_text())["browsers"]}
    layout = {
        "chromium": ("chrome-linux64", "chrome"),
        "chromium-headless-shell": ("chrome-headless-shell-linux64", "chrome-headless-shell"),
        "ffmpeg": (None, "ffmpeg-linux"),
    }
    for name, (sub, exe) in layout.items():
        folder = browsers / f"{name.replace('-', '_')}-{revisions[name]}"
        target = folder / sub if sub else folder
        target.mkdir(parents=True, exist_ok=True)
        link = target / exe
        if not link.exists():
            link.symlink_to(CHROMIUM if name != "ffmpeg" else shutil.which("true"))
        (folder / "INSTALLATION_COMPLETE").touch()
        (folder / "DEPENDENCIES_VALIDATED").touch()


@pytest.mark.timeout(240)
def test_jupyterlab_browser_check_loads_the_extension(tmp_path):
    assert CHROMIUM, "browser_check needs Debian's chromium: run `make browser` (make test does)"
    browsers = tmp_path / "ms-playwright"
    _offline_playwright(browsers)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        "PLAYWRIGHT_BROWSERS_PATH": str(browsers),
        "PLAYWRIGHT_SKIP_BROWSER_GC": "1",
        "PLAYWRIGHT_SKIP_VALIDATE_HOST_REQUIREMENTS": "1",
        "AIOS_HOME": str(tmp_path / "aios"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
        "JLAB_BROWSER_CHECK_OUTPUT": str(tmp_path / "shots"),
    }
    cmd = [sys.executable, "-m", "jupyterlab.browser_check", f"--ServerApp.root_dir={tmp_path}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    result = run(cmd, 200, env=env, cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "Browser test complete" in out, out[-6000:]
    assert "aios_lab: sidebar API at" in out  # the server extension was loaded too
