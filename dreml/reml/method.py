"""`--method auto`: the exact dense path where it is faster and fits, the randomised one elsewhere.

Cost model (flops; m = variants, P = passes of a randomised fit, k = mean columns per pass):
    exact       4 n^2 m (K_g = Z_g Z_g^T / m_g through one n-column pass) + I n^3 (Cholesky and
                inverse of H per AI iteration, I about 4)
    randomised  P k 4 n m (P about 40-100, k about 50 after the per-column tolerances)
For m >> n the ratio is about n / (P k): the exact path wins below an n of a few thousand,
whatever m is. The crossover measured on the development machine (docs/performance.md,
"Exact or randomised") is `EXACT_MAX_N`. The exact path also holds up to (G + 6) n^2 float64 on
the driver (`exact_bytes`); it is chosen only when that is at most `EXACT_MEMORY_FRACTION` of
the driver's available memory.
"""

from __future__ import annotations

import psutil

EXACT_MAX_N = 3000
EXACT_MEMORY_FRACTION = 0.5


def exact_bytes(n: int, n_components: int) -> int:
    """Driver memory of the exact path at its peak: (G + 6) n^2 float64 (K_g; H, its factor,
    H^-1 and the triangular temporaries; P; the identity the K_g pass multiplies)."""
    return (n_components + 6) * n * n * 8


def choose_method(method: str, n: int, n_components: int, available: int | None = None) -> tuple[str, str]:
    """("exact" | "randomised", the reason, for the report).

    Arguments:
        method: the configured method ("auto", "exact" or "randomised").
        n, n_components: samples and G.
        available: driver bytes available (default: psutil's available memory).
    """
    if method != "auto":
        return method, f"method={method} requested"
    available = psutil.virtual_memory().available if available is None else available
    need = exact_bytes(n, n_components)
    if n > EXACT_MAX_N:
        return "randomised", f"auto: n = {n} > {EXACT_MAX_N}, where the randomised path is faster"
    if need > EXACT_MEMORY_FRACTION * available:
        return "randomised", (
            f"auto: the exact path needs {need / 2**30:.1f} GiB, more than {EXACT_MEMORY_FRACTION:.0%} of the "
            f"driver's {available / 2**30:.1f} GiB available"
        )
    return "exact", f"auto: n = {n} <= {EXACT_MAX_N}, where the exact path is faster, and its {need / 2**30:.2f} GiB fit"
