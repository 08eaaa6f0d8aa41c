"""The driver's JAX: float64 and the CPU by default, the user's platform choice respected.

Each case runs in a fresh interpreter: JAX's platform is fixed once its first backend exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_REPORT = (
    "import json, jax; import dreml.reml; "
    "print(json.dumps({'backend': jax.default_backend(), 'x64': bool(jax.config.jax_enable_x64), "
    "'platforms': jax.config.jax_platforms}))"
)


def _driver(env: dict[str, str], code: str = _REPORT) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "DREML_DRIVER_DEVICE")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120)


def _report(env: dict[str, str], code: str = _REPORT) -> dict:
    done = _driver(env, code)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_configure_jax__cpu_and_x64_by_default():
    assert _report({}) == {"backend": "cpu", "x64": True, "platforms": "cpu"}


def test_configure_jax__cpu_when_jax_was_imported_first():
    # JAX imported (no backend yet) before dreml: its configuration still gets the CPU
    assert _report({}, "import jax; " + _REPORT)["platforms"] == "cpu"


def test_configure_jax__user_jax_platforms_respected():
    # an empty JAX_PLATFORMS asks JAX to choose the platform itself: not replaced by "cpu"
    assert _report({"JAX_PLATFORMS": ""})["platforms"] == ""


def test_configure_jax__gpu_opt_in_leaves_the_platform_to_jax():
    code = "import os; " + _REPORT.replace("}))", ", 'prealloc': os.environ['XLA_PYTHON_CLIENT_PREALLOCATE']}))")
    report = _report({"DREML_DRIVER_DEVICE": "gpu"}, code)
    assert report["platforms"] is None and report["x64"] and report["prealloc"] == "false"


def test_configure_jax__raise_on_unknown_driver_device():
    from dreml.jax_setup import configure_jax

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DREML_DRIVER_DEVICE", "tpu")
        with pytest.raises(ValueError, match=r"DREML_DRIVER_DEVICE must be 'cpu' or 'gpu', got 'tpu'"):
            configure_jax()
