"""The GCTA standardisation of a shard row, shared by the dense and the sparse shards.

    z_ij = (x_ij - 2 p_j) / sqrt(2 p_j (1 - p_j)),   missing -> 0

with x_ij the ALT dosage and p_j the ALT frequency the driver chose for variant j
(`dreml.operators.streaming`, "Frequencies"): in shard terms z_j = s_j (x_j - t_j) on the
observed calls, t_j = 2 p_j the centre and s_j = 1 / sqrt(2 p_j (1 - p_j)) the scale.
"""

from __future__ import annotations

import numpy as np


def row_standardisation(frequencies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # shape: (c,) -> 2 x (c,)
    """(t, s) of each row in float64: centre t_j = 2 p_j and scale s_j = 1 / sqrt(2 p_j (1 - p_j))."""
    p = np.asarray(frequencies, dtype=np.float64)
    return 2.0 * p, 1.0 / np.sqrt(2.0 * p * (1.0 - p))


def standardisation_table(frequencies: np.ndarray) -> np.ndarray:  # shape: (c,) -> (c, 4)
    """z for code (missing, 0, 1, 2) of each row, float64: column x + 1 holds s (x - t); missing -> 0."""
    centre, scale = row_standardisation(frequencies)
    table = (np.arange(-1, 3, dtype=np.float64)[None, :] - centre[:, None]) * scale[:, None]
    table[:, 0] = 0.0
    return table
