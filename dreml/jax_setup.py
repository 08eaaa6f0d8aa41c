"""JAX on the driver: float64, and on the CPU unless the user asks for a GPU.

The driver's JAX solves small blocks (n x k, k x k); on a GPU node, a JAX that picks the
GPU preallocates 75% of GPU 0's memory beside a Dask-CUDA worker's resident shards. So the
driver runs JAX on the CPU by default:

- `JAX_PLATFORMS` already set: respected as given.
- `DREML_DRIVER_DEVICE=gpu`: JAX chooses its platform itself (a GPU where one is visible),
  without preallocating (`XLA_PYTHON_CLIENT_PREALLOCATE=false` unless set). For a driver
  with a GPU of its own, see docs/performance.md.
- otherwise (`DREML_DRIVER_DEVICE` unset or `cpu`): `JAX_PLATFORMS=cpu`.

The choice must be made before JAX creates its first backend (the first array or
computation), which is why `dreml.reml` calls `configure_jax()` before importing its solvers.
"""

from __future__ import annotations

import os

DRIVER_DEVICE_ENV = "DREML_DRIVER_DEVICE"
DRIVER_DEVICES = ("cpu", "gpu")


def configure_jax() -> None:
    """Choose the driver's JAX platform (see the module docstring) and turn on float64.

    The environment variables are set in `os.environ`, so processes this one starts (local
    Dask workers among them) inherit the same choice.

    Raises:
        ValueError: `DREML_DRIVER_DEVICE` is neither "cpu" nor "gpu".
    """
    device = os.environ.get(DRIVER_DEVICE_ENV, "cpu").strip().lower()
    if device not in DRIVER_DEVICES:
        raise ValueError(f"{DRIVER_DEVICE_ENV} must be 'cpu' or 'gpu', got {os.environ[DRIVER_DEVICE_ENV]!r}")
    user_platforms = "JAX_PLATFORMS" in os.environ
    if device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    else:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    import jax

    if device == "cpu" and not user_platforms:
        # JAX reads JAX_PLATFORMS when it is first imported; if something imported it earlier,
        # its configuration still decides until the first backend is created
        jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_enable_x64", True)
