"""`fit_annotated` against independent references: the one- and two-component REML fits of
`dreml.reml.fit_reml` on `DenseOperator` (exact path), the randomised path against the exact
one, and LDAK alpha recovery on a simulation."""

from __future__ import annotations

import numpy as np
import pytest
from annot_sim import genotypes, phenotype

from dreml.annotations import AnnotConfig, fit_annotated
from dreml.errors import InputError
from dreml.operators import DenseOperator
from dreml.reml import FitConfig, fit_reml

EXACT = AnnotConfig(method="exact", tol_decrement=1e-20, max_iter=100, seed=1)
REFERENCE = FitConfig(method="exact", tol_decrement=1e-20, max_iter=100, seed=1)


def test_constant_map__equals_one_component_fit():
    """linear with no columns is sigma2_j = exp(tau_0): the one-component model, theta_g = m exp(tau_0).
    Started far from the optimum, so the annotated optimiser must find it on its own."""
    Z, _ = genotypes(200, 300, seed=11)
    y = phenotype(Z, np.full(300, 0.4 / 300), 0.6, seed=12)
    ref = fit_reml(DenseOperator.from_genotypes([Z]), y, None, REFERENCE)
    fit = fit_annotated(
        Z,
        y,
        annotations=np.zeros((300, 0)),
        columns=(),
        variance_model="linear",
        config=EXACT,
        start=np.array([np.log(0.05 / 300), np.log(2.0)]),
    )
    assert fit.converged, fit.status
    assert abs(fit.h2 - ref.h2_total) < 1e-8
    assert abs(fit.loglik - ref.loglik) < 1e-8
    assert fit.vg == pytest.approx(ref.theta[0], rel=1e-6)
    assert fit.theta_e == pytest.approx(ref.theta[1], rel=1e-6)
    assert fit.h2_se == pytest.approx(ref.h2_total_se, rel=1e-4)


def test_partition_annotations__equal_two_component_fit():
    """Binary annotations partitioning the variants: exp(tau_c) per group (the intercept drops
    out) is the two-component model with theta_c = m_c exp(tau_c)."""
    m1, m2 = 180, 120
    Z, _ = genotypes(250, m1 + m2, seed=21)
    sigma2 = np.r_[np.full(m1, 0.1 / m1), np.full(m2, 0.4 / m2)]
    y = phenotype(Z, sigma2, 0.5, seed=22)
    A = np.zeros((m1 + m2, 2))
    A[:m1, 0] = A[m1:, 1] = 1.0
    ref = fit_reml(DenseOperator.from_genotypes([Z[:, :m1], Z[:, m1:]]), y, None, REFERENCE)
    fit = fit_annotated(Z, y, annotations=A, columns=("g1", "g2"), variance_model="linear", config=EXACT)
    assert fit.converged, fit.status
    assert fit.param_names == ("tau_g1", "tau_g2")
    assert abs(fit.loglik - ref.loglik) < 1e-6
    np.testing.assert_allclose([m1 * np.exp(fit.params[0]), m2 * np.exp(fit.params[1])], ref.theta[:2], rtol=1e-5)
    assert fit.h2 == pytest.approx(ref.h2_total, abs=1e-7)
    # enrichment of group c: (theta_c / Vg) / (m_c / m), against the reference fit
    vg = ref.theta[:2].sum()
    for e, theta_c, m_c in zip(fit.enrichment, ref.theta[:2], (m1, m2)):
        assert e.share_variants == pytest.approx(m_c / (m1 + m2))
        assert e.enrichment == pytest.approx(theta_c / vg / (m_c / (m1 + m2)), rel=1e-5)
        assert e.se > 0 and e.mc_se == 0


def test_randomised__agrees_with_exact_within_monte_carlo_error():
    Z, p = genotypes(300, 400, seed=31)
    v = (2 * p * (1 - p)) ** 0.75
    y = phenotype(Z, 0.5 * v / v.sum(), 0.5, seed=32)
    exact = fit_annotated(Z, y, variance_model="ldak", frequencies=p, config=AnnotConfig(method="exact", seed=1))
    rand = fit_annotated(
        Z, y, variance_model="ldak", frequencies=p, config=AnnotConfig(method="randomised", seed=2, pcg_tol=1e-7, probe_tol=1e-6)
    )
    assert exact.converged and rand.converged, (exact.status, rand.status)
    assert rand.passes_by_kind["score"] > 0 and rand.method == "randomised"
    assert np.all(rand.params_mc_se > 0)
    # the randomised root moves from the exact one by its Monte Carlo error (4 SDs)
    assert np.all(np.abs(rand.params - exact.params) < 4 * rand.params_mc_se + 1e-6)
    assert abs(rand.h2 - exact.h2) < 4 * rand.h2_mc_se + 1e-6
    assert abs(rand.loglik - exact.loglik) < 4 * rand.loglik_se + 0.05


def test_mlp__starts_constant_and_improves_the_likelihood():
    Z, _ = genotypes(150, 200, seed=41)
    rng = np.random.default_rng(42)
    A = rng.standard_normal((200, 2))
    y = phenotype(Z, 0.6 * np.exp(A[:, 0]) / np.exp(A[:, 0]).sum(), 0.4, seed=43)
    cfg = AnnotConfig(method="exact", adam_max_iter=60, learning_rate=0.05, hidden=(4,), seed=1)
    fit = fit_annotated(Z, y, annotations=A, variance_model="mlp", config=cfg)
    first, last = fit.history[0], fit.history[-1]
    assert np.ptp(fit.history[0]["psi"]) > 0  # weights random, output layer zero
    assert last["loglik"] > first["loglik"]
    assert np.isnan(fit.h2_se)  # no AI for Adam fits: SEs not computed


def test_fit_annotated__raise_on_constant_column():
    Z, _ = genotypes(50, 30, seed=1)
    A = np.column_stack([np.ones(30), np.arange(30.0)])
    with pytest.raises(InputError, match="annotation 'c1' is constant"):
        fit_annotated(Z, np.arange(50.0), annotations=A, columns=("c1", "c2"), config=EXACT)


def test_fit_annotated__raise_on_non_finite():
    Z, _ = genotypes(50, 30, seed=1)
    A = np.arange(30.0)[:, None].copy()
    A[4, 0] = np.nan
    with pytest.raises(InputError, match="annotation 'c1' is not finite for variant 4"):
        fit_annotated(Z, np.arange(50.0), annotations=A, columns=("c1",), config=EXACT)


def test_fit_annotated__raise_on_dependent_columns():
    Z, _ = genotypes(50, 30, seed=1)
    a = np.arange(30.0)
    with pytest.raises(InputError, match="linearly dependent"):
        fit_annotated(Z, np.arange(50.0), annotations=np.column_stack([a, 2 * a]), columns=("a", "b"), config=EXACT)


def test_fit_annotated__raise_on_unknown_model():
    Z, _ = genotypes(50, 30, seed=1)
    with pytest.raises(InputError, match="unknown variance model 'lasso'"):
        fit_annotated(Z, np.arange(50.0), variance_model="lasso", config=EXACT)


def test_fit_annotated__raise_on_annotation_rows():
    Z, _ = genotypes(50, 30, seed=1)
    with pytest.raises(InputError, match="one row per variant"):
        fit_annotated(Z, np.arange(50.0), annotations=np.zeros((29, 1)), config=EXACT)


@pytest.mark.slow
def test_ldak_alpha__recovered_on_simulation():
    """n = 2,000, m = 2,000 independent variants (MAF uniform on [0.01, 0.5]), h2 = 0.5,
    true alpha = -0.25: the fitted alpha lies within 3 SEs of the truth."""
    Z, p = genotypes(2000, 2000, seed=51, maf_min=0.01)
    v = (2 * p * (1 - p)) ** 0.75
    y = phenotype(Z, 0.5 * v / v.sum(), 0.5, seed=52)
    fit = fit_annotated(Z, y, variance_model="ldak", frequencies=p, config=AnnotConfig(method="exact", seed=1))
    alpha, se = fit.params[1], fit.params_se[1]
    print(
        f"LDAK alpha: fitted {alpha:.4f} (SE {se:.4f}), truth -0.25; h2 {fit.h2:.4f} (SE {fit.h2_se:.4f}); "
        f"iterations {fit.iterations}; {fit.timings['total']:.1f} s"
    )
    assert fit.converged, fit.status
    assert abs(alpha + 0.25) < 3 * se
    assert se < 0.5


def test_mlp_weight_decay__shrinks_the_network():
    """A strong decay (a tight N(0, 1/lambda) prior) pulls every weight towards 0, so sigma2 stays
    near constant; log s and log theta_e are not penalised (h2 near the unpenalised start)."""
    Z, _ = genotypes(100, 80, seed=44)
    A = np.random.default_rng(45).standard_normal((80, 2))
    y = phenotype(Z, 0.5 * np.exp(A[:, 0]) / np.exp(A[:, 0]).sum(), 0.5, seed=46)
    fits = {
        decay: fit_annotated(
            Z,
            y,
            annotations=A,
            variance_model="mlp",
            config=AnnotConfig(method="exact", adam_max_iter=40, hidden=(3,), weight_decay=decay, seed=1),
        )
        for decay in (0.0, 1e4)
    }
    w0, w = (np.linalg.norm(np.asarray(f.params[1:])) for f in (fits[0.0], fits[1e4]))
    assert w < 0.5 * w0
    assert np.ptp(fits[1e4].sigma2) / fits[1e4].sigma2.mean() < 0.05 < np.ptp(fits[0.0].sigma2) / fits[0.0].sigma2.mean()
    assert abs(fits[1e4].h2 - fits[1e4].start["h2"]) < 0.05


def test_annot_config__raise_on_negative_weight_decay():
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        AnnotConfig(weight_decay=-1.0)
