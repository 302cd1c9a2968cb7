"""Tutorials run by nbval get a scratch AIOS_HOME and 8 forced host devices in their kernels."""

import os
import tempfile

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ["AIOS_HOME"] = tempfile.mkdtemp(prefix="aios-notebooks-")
