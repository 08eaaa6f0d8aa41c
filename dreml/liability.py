"""Heritability of a case-control trait on the liability scale (Lee et al. 2011, AJHG 88:294,
eq. 23), as GCTA's `--prevalence` reports it.

    h2_L = h2_O K^2 (1 - K)^2 / (P (1 - P) z^2),    z = phi(t),  t = Phi^-1(1 - K)

h2_O: the estimate on the observed (0/1) scale; K: the prevalence of the disease in the
population (`prevalence`); P: the proportion of cases among the analysed samples
(`case_fraction`); phi and Phi: the standard normal density and distribution function, t the
liability threshold. The factor is a constant, so an SE is scaled by it too.

A case-control phenotype is coded 0/1 (0 = control, 1 = case) or as PLINK's 1/2 (1 = control,
2 = case); missing values (NA, -9) are gone by the time the samples are aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from dreml.errors import InputError

CODINGS = ((0.0, 1.0), (1.0, 2.0))  # (control, case)
_SHOWN = 6  # distinct values named in an error


def liability_factor(prevalence: float, case_fraction: float) -> float:
    """K^2 (1 - K)^2 / (P (1 - P) z^2): the factor from observed-scale h2 (and SE) to the liability scale."""
    z = norm.pdf(norm.isf(prevalence))  # isf(K) = Phi^-1(1 - K), accurate for small K
    return (prevalence * (1.0 - prevalence)) ** 2 / (case_fraction * (1.0 - case_fraction) * z * z)


def case_fraction(y: np.ndarray, *, phenotype: str) -> float:
    """The proportion of cases in `y` (shape (n,)), coded 0/1 or 1/2 (module docstring).

    Raises:
        InputError: naming `phenotype` and the values found, when `y` is not coded so or
            lacks cases or controls (the transformation needs 0 < P < 1).
    """
    values = np.unique(y)
    for control, case in CODINGS:
        if set(values.tolist()) == {control, case}:
            return float(np.mean(y == case))
    shown = ", ".join(f"{v:g}" for v in values[:_SHOWN]) + (f", ... ({len(values)} distinct)" if len(values) > _SHOWN else "")
    if len(values) == 1:
        raise InputError(
            f"--prevalence: phenotype {phenotype!r} has the single value {shown}: "
            "the liability scale needs both cases and controls"
        )
    # PLINK reads 0 as missing in its 1/2 coding; dreml reads it as a value
    hint = "; for PLINK's 1/2 coding write a missing value as NA or -9, not 0" if {0.0, 1.0, 2.0} <= set(values.tolist()) else ""
    raise InputError(
        f"--prevalence: phenotype {phenotype!r} is not coded as case-control: values {shown} "
        f"(expected 0/1, or PLINK's 1/2 with 2 = case){hint}"
    )


@dataclass(frozen=True)
class LiabilityScale:
    """The liability-scale transformation of one fit (module docstring).

    Fields:
        prevalence: K, the population prevalence, in (0, 1).
        case_fraction: P, the proportion of cases among the analysed samples, in (0, 1).
    """

    prevalence: float
    case_fraction: float

    def __post_init__(self) -> None:
        if not 0.0 < self.prevalence < 1.0:
            raise InputError(f"--prevalence must lie strictly between 0 and 1, got {self.prevalence:g}")
        if not 0.0 < self.case_fraction < 1.0:
            raise InputError(f"the case fraction must lie strictly between 0 and 1, got {self.case_fraction:g}")

    @classmethod
    def of_phenotype(cls, prevalence: float, y: np.ndarray, *, phenotype: str) -> LiabilityScale:
        """The transformation for the analysed phenotype values `y` (shape (n,)), checking their coding."""
        return cls(prevalence, case_fraction(y, phenotype=phenotype))

    @property
    def factor(self) -> float:
        return liability_factor(self.prevalence, self.case_fraction)
