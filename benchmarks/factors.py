"""The low-rank factor model (`dreml.reml.factors`) against T independent GBLUPs.

Simulation (issue 13): n samples, m independent SNPs (allele frequencies U(0.05, 0.5),
GCTA-standardised), one GRM K = Z Z^T / m held densely (`DenseOperator`; both methods take the
exact REML path, so the comparison is of the models, not of the solvers).
- K_true = 5 factors f_k ~ N(0, h2_k K + (1 - h2_k) I), h2 = (0.9, 0.7, 0.5, 0.3, 0.1);
- T traits y_t = F lambda_t + e_t, lambda_kt ~ N(0, 1) kept with probability 1/2 (at least one
  factor per trait), e_t ~ N(0, psi_t I) with psi_t = sum_k lambda_kt^2 (half of each trait's
  variance comes from the factors);
- held out: a share `new` of the samples entirely (new individuals: every trait masked) and a
  share `missing` of the other samples' trait values, at random.
Fits: the factor model with K = 5 (default `FactorConfig`, seed 0; `--max-iter`, `--accelerate`:
SQUAREM, `FactorConfig.accelerate`) on the observed values of the
phenotyped samples, the new samples predicted through their relatives as `dreml fit
--factor-predict-unphenotyped` does (`predict_factors`: one product with K over all samples);
with `--choose 1-8`, K chosen among those candidates by held-out log density (`--rule best|1se`,
`choose_factor_count`, 10% of the observed values held out) and refitted; one GBLUP per trait
(REML on its observed samples, `fit_reml_traits`, seed 0), whose prediction of a held-out
sample is x b + theta_g K[:, obs] P y.
Rows:
- "factor space": the canonical correlations between the true and estimated factors (the
  rotation-invariant recovery), and the traits' h2 implied by the fit,
  sum_k lambda_kt^2 h2_k / (sum_k lambda_kt^2 + psi_t), against the true ones (correlation, mean bias);
- one per true factor: its h2, the matched estimate (the estimated factor whose posterior mean
  correlates best with it, one to one), its SE, and that correlation;
- with --choose: the candidates' held-out log densities per value, their paired SEs from the
  best, and the chosen K;
- one per method: mean over traits of the correlation of the predictions of the held-out
  values with (r_pheno) the held-out phenotypes and (r_genetic) the true genetic values
  sum_k lambda_kt g_k (the factor model's Y^ for r_pheno, its genomic prediction G^ for
  r_genetic), separately for the partly observed samples (_partly: the factor model also uses
  the sample's observed traits) and the new samples (_new: relatives only); wall time; for the
  factor model its EM iterations (evaluations), whether the stopping rule was met, and the
  rejected extrapolations.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from benchmarks.run import format_table
from dreml.cli.factors import factor_counts
from dreml.operators import DenseOperator
from dreml.reml import FitConfig, RemlResult
from dreml.reml.factor_prediction import predict_factors
from dreml.reml.factor_selection import FactorSelectionConfig, choose_factor_count
from dreml.reml.factors import FactorConfig, fit_factor_model
from dreml.reml.traits import fit_reml_traits
from dreml.simulate import standardise

FULL = {"n": 1000, "m": 5000, "traits": 200, "missing": 0.3, "new": 0.1}
QUICK = {"n": 400, "m": 2000, "traits": 40, "missing": 0.3, "new": 0.1}
FACTOR_H2 = (0.9, 0.7, 0.5, 0.3, 0.1)


def simulate(n: int, m: int, traits: int, missing: float, new: float, seed: int = 0) -> dict:
    """Genotypes, factors, traits and the mask (module docstring)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.5, m)
    Z, keep = standardise(rng.binomial(2, p[:, None], (m, n)).astype(np.int8))
    Z = Z[keep]  # (m, n)
    K = Z.T @ Z / Z.shape[0]
    h2 = np.array(FACTOR_H2)
    genetic = np.column_stack([Z.T @ rng.standard_normal(Z.shape[0]) * np.sqrt(h / Z.shape[0]) for h in h2])  # (n, K)
    F = genetic + rng.standard_normal((n, len(h2))) * np.sqrt(1 - h2)
    Lambda = rng.standard_normal((len(h2), traits)) * (rng.random((len(h2), traits)) < 0.5)
    Lambda[rng.integers(len(h2), size=traits), np.arange(traits)] = rng.standard_normal(traits)
    psi = (Lambda**2).sum(axis=0)
    Y = F @ Lambda + rng.standard_normal((n, traits)) * np.sqrt(psi)
    held_out = rng.random((n, traits)) < missing
    new_samples = rng.random(n) < new
    held_out[new_samples] = True
    return {
        "K": K,
        "F": F,
        "h2": h2,
        "G": genetic @ Lambda,
        "Y": Y,
        "held_out": held_out,
        "trait_h2": trait_h2(Lambda, h2, psi),
        "new": new_samples,
    }


def gblup(K: np.ndarray, Y_obs: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Per trait REML on its observed samples and x b + theta_g K[:, obs] P y for all samples; seconds."""
    t0 = time.perf_counter()
    n, T = Y_obs.shape
    rows = [np.flatnonzero(np.isfinite(Y_obs[:, t])) for t in range(T)]
    fits = fit_reml_traits(
        DenseOperator(K),
        [Y_obs[r, t] for t, r in enumerate(rows)],
        [np.ones((len(r), 1)) for r in rows],
        rows,
        FitConfig(seed=seed),
    )
    pred = np.empty((n, T))
    for t, (r, fit) in enumerate(zip(rows, fits.results)):
        assert isinstance(fit, RemlResult) and fit.effects is not None
        pred[:, t] = fit.effects.beta[0] + fit.theta[0] * K[:, r] @ fit.effects.Py
    return pred, time.perf_counter() - t0


def mean_correlation(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean over traits of corr(pred, truth) over the masked samples of each trait; a constant
    prediction (a GBLUP with theta_g = 0) counts as 0."""
    r = []
    for t in range(pred.shape[1]):
        p, y = pred[mask[:, t], t], truth[mask[:, t], t]
        r.append(0.0 if np.ptp(p) == 0 else float(np.corrcoef(p, y)[0, 1]))
    return float(np.mean(r))


def canonical_correlations(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Canonical correlations between the column spaces of A and B (n, K): rotation-invariant."""
    Qa, _ = np.linalg.qr(A - A.mean(axis=0))
    Qb, _ = np.linalg.qr(B - B.mean(axis=0))
    return np.linalg.svd(Qa.T @ Qb, compute_uv=False)


def trait_h2(Lambda: np.ndarray, h2: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Each trait's h2 implied by the factors: sum_k lambda_kt^2 h2_k / (sum_k lambda_kt^2 + psi_t)."""
    return (Lambda**2 * h2[:, None]).sum(axis=0) / ((Lambda**2).sum(axis=0) + psi)


def run(
    quick: bool, choose: tuple[int, ...] = (), rule: str = "best", accelerate: bool = False, max_iter: int = 50
) -> list[dict]:
    size = QUICK if quick else FULL
    sim = simulate(size["n"], size["m"], size["traits"], size["missing"], size["new"])
    Y_obs = np.where(sim["held_out"], np.nan, sim["Y"])
    K_true = len(FACTOR_H2)
    phenotyped = np.flatnonzero(~sim["new"])
    operator = DenseOperator(sim["K"][np.ix_(phenotyped, phenotyped)])
    config = FactorConfig(n_factors=K_true, max_iter=max_iter, accelerate=accelerate, reml=FitConfig(seed=0))
    common = {"n": size["n"], "m": size["m"], "traits": size["traits"], "missing": size["missing"], "new": size["new"]}
    common["accelerate"] = accelerate
    rows = []
    t0 = time.perf_counter()
    if choose:
        selection = choose_factor_count(operator, Y_obs[phenotyped], None, config, FactorSelectionConfig(choose, rule=rule))
        fit = selection.result
        rows.append(
            {
                **common,
                "row": f"choose K ({rule})",
                "candidates": ",".join(map(str, selection.candidates)),
                "log_density": " ".join(f"{v:.4f}" for v in selection.scores),
                "se_from_best": " ".join(f"{v:.4f}" for v in selection.score_se),
                "chosen": selection.chosen,
                "seconds": time.perf_counter() - t0,
            }
        )
    else:
        fit = fit_factor_model(operator, Y_obs[phenotyped], None, config)
    factors, blups = predict_factors(DenseOperator(sim["K"]), phenotyped, fit)
    factor_s = time.perf_counter() - t0
    n_est = fit.loadings.shape[0]
    corr = np.abs(np.corrcoef(sim["F"].T, factors.T)[:K_true, K_true:])  # (true, estimated)
    true_k, est_k = linear_sum_assignment(-corr)
    rows += [
        {
            **common,
            "row": f"factor {k + 1}",
            "h2_true": float(sim["h2"][k]),
            "h2_est": float(fit.h2_total[j]),
            "h2_se": float(fit.h2_se[j]),
            "corr_factor": float(corr[k, j]),
        }
        for k, j in zip(true_k, est_k)
    ]
    implied = trait_h2(fit.loadings, fit.h2_total, fit.psi)
    rows.append(
        {
            **common,
            "row": "factor space",
            "K": n_est,
            "canonical_corr_min": float(canonical_correlations(sim["F"], factors).min()),
            "canonical_corr_mean": float(canonical_correlations(sim["F"], factors).mean()),
            "trait_h2_corr": float(np.corrcoef(implied, sim["trait_h2"])[0, 1]),
            "trait_h2_bias": float((implied - sim["trait_h2"]).mean()),
        }
    )
    X = np.ones((size["n"], 1))
    gblup_pred, gblup_s = gblup(sim["K"], Y_obs, seed=0)
    partly = sim["held_out"] & ~sim["new"][:, None]  # missing values of samples with other traits observed
    new = sim["held_out"] & sim["new"][:, None]  # every value of the samples with no trait observed
    for name, predicted, genetic, seconds in (
        (f"factor model (K = {n_est})", fit.predicted(X, factors), fit.genetic_values(blups), factor_s),
        ("independent GBLUPs", gblup_pred, gblup_pred, gblup_s),
    ):
        rows.append(
            {
                **common,
                "row": name,
                "r_pheno_partly": mean_correlation(predicted, sim["Y"], partly),
                "r_genetic_partly": mean_correlation(genetic, sim["G"], partly),
                "r_pheno_new": mean_correlation(predicted, sim["Y"], new),
                "r_genetic_new": mean_correlation(genetic, sim["G"], new),
                "seconds": seconds,
                **(
                    {
                        "iterations": fit.iterations,
                        "converged": fit.converged,
                        "rejected": sum(h.get("accepted") is False for h in fit.history),
                    }
                    if name.startswith("factor")
                    else {}
                ),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--choose", type=factor_counts, default=(), help="candidate K values (1,2,4 or 1-8): choose K")
    parser.add_argument("--rule", choices=("best", "1se"), default="best", help="rule of --choose")
    parser.add_argument("--accelerate", action="store_true", help="SQUAREM around the EM (FactorConfig.accelerate)")
    parser.add_argument("--max-iter", type=int, default=50, help="most EM iterations (evaluations with --accelerate)")
    args = parser.parse_args()
    print(format_table(run(args.quick, args.choose, args.rule, args.accelerate, args.max_iter)))


if __name__ == "__main__":
    main()
