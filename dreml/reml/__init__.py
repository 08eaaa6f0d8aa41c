"""The REML engine: `fit_reml(operator, y, X, config)` with `FitConfig`, returning `RemlResult`.

Importing this package configures the driver's JAX before any JAX array exists: float64
(`jax_enable_x64`) and the CPU unless asked otherwise (`dreml.jax_setup`); the solvers' small
algebra runs in JAX on the driver. Mathematics: docs/math.md.
"""

from dreml.jax_setup import configure_jax

configure_jax()

from dreml.reml.config import FitConfig  # noqa: E402
from dreml.reml.engine import fit_reml  # noqa: E402
from dreml.reml.results import RemlResult  # noqa: E402

__all__ = ["FitConfig", "RemlResult", "fit_reml"]
