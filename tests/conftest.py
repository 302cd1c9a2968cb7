"""Test set-up: 8 forced XLA host devices (before jax is imported) and a fresh AIOS_HOME per test."""

import os
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Anything started outside a test's own AIOS_HOME (kernels, workers) still stays out of ~/.aios.
os.environ.setdefault("AIOS_HOME", tempfile.mkdtemp(prefix="aios-session-"))

import pytest  # noqa: E402

ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "test-artifacts")


@pytest.fixture(autouse=True)
def aios_home(tmp_path, monkeypatch):
    """Every test gets its own, empty AIOS_HOME."""
    home = tmp_path / "aios"
    monkeypatch.setenv("AIOS_HOME", str(home))
    return home


@pytest.fixture
def ip():
    """A real IPython shell with ``%load_ext aios_lab`` done."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "aios_lab")
    yield shell
    shell.user_ns.clear()


@pytest.fixture
def artifacts():
    """A folder kept after the run (screenshots, logs)."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    return ARTIFACTS
