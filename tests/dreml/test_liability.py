"""`dreml.liability`: the liability-scale factor against Lee et al. (2011) eq. 23 written out
with scipy, the two case-control codings, and the errors naming the values found."""

import numpy as np
import pytest
from scipy.stats import norm

from dreml.errors import InputError
from dreml.liability import LiabilityScale, case_fraction, liability_factor


@pytest.mark.parametrize("prevalence", [0.001, 0.01, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.8])
def test_liability_factor__matches_closed_form(prevalence, fraction):
    t = norm.ppf(1 - prevalence)  # the threshold on the liability scale
    z = norm.pdf(t)
    h2_observed = 0.2
    h2_liability = h2_observed * prevalence**2 * (1 - prevalence) ** 2 / (fraction * (1 - fraction) * z**2)
    assert h2_observed * liability_factor(prevalence, fraction) == pytest.approx(h2_liability, rel=1e-12)
    assert LiabilityScale(prevalence, fraction).factor == liability_factor(prevalence, fraction)


@pytest.mark.parametrize("control, case", [(0, 1), (1, 2)])
def test_case_fraction__both_codings(control, case):
    y = np.array([control] * 7 + [case] * 3, dtype=float)
    assert case_fraction(y, phenotype="t2d") == pytest.approx(0.3)
    scale = LiabilityScale.of_phenotype(0.05, y, phenotype="t2d")
    assert scale.prevalence == 0.05 and scale.case_fraction == pytest.approx(0.3)


@pytest.mark.parametrize(
    "values, match",
    [
        ([0.5, 1.2, 3.0], r"phenotype 'bmi' is not coded as case-control: values 0.5, 1.2, 3 \(expected 0/1, or PLINK's 1/2"),
        ([0, 1, 2], r"values 0, 1, 2 .*; for PLINK's 1/2 coding write a missing value as NA or -9, not 0"),
        (list(range(10)), r"values 0, 1, 2, 3, 4, 5, \.\.\. \(10 distinct\)"),
    ],
)
def test_case_fraction__raise_on_other_coding(values, match):
    with pytest.raises(InputError, match=match):
        case_fraction(np.array(values, dtype=float), phenotype="bmi")


def test_case_fraction__raise_on_one_class():
    with pytest.raises(InputError, match=r"phenotype 'bmi' has the single value 1: the liability scale needs both"):
        case_fraction(np.ones(5), phenotype="bmi")


@pytest.mark.parametrize("prevalence", [0.0, 1.0, -0.1, float("nan")])
def test_liability_scale__raise_on_prevalence_outside_unit_interval(prevalence):
    with pytest.raises(InputError, match=r"--prevalence must lie strictly between 0 and 1"):
        LiabilityScale(prevalence, 0.5)
