"""The REML engine: `fit_reml(operator, y, X, config)` with `FitConfig`, returning `RemlResult`.

Importing this package turns on JAX float64 (`jax_enable_x64`) before any JAX array exists;
the solvers' small algebra runs in JAX on the driver. Mathematics: docs/math.md.
"""

import jax

jax.config.update("jax_enable_x64", True)

from dreml.reml.config import FitConfig  # noqa: E402
from dreml.reml.engine import fit_reml  # noqa: E402
from dreml.reml.results import RemlResult  # noqa: E402

__all__ = ["FitConfig", "RemlResult", "fit_reml"]
