"""The result of `dreml.fit`: the typed report and the state post-REML work starts from.

`FitResult` is what a user reads (estimates, SEs, h2, fixed effects, LRT, counts, settings,
history); `to_dict()` is its JSON form (keys in docs/cli.md). `FitState` is what `dreml
predict`, `dreml cv` and later analyses need from a fit, saved beside the report as
PREFIX.fit.npz and reloaded on another machine or cluster:

    theta, cov(theta)              variance components (residual last) and their covariance
    beta, cov(beta)                GLS fixed effects at theta (`dreml.reml.effects`)
    P y, K_g P y                   per analysed sample, in the fit's sample order
    samples                        FID and IID of the analysed samples
    variants                       per component, every variant used: store, index, ID,
                                   contig, position, REF, ALT (the counted allele) and the
                                   ALT frequency p_j that standardised it
    snp_effect                     BLUP of each variant's effect on the standardised scale,
                                   b_j = theta_g z_j^T P y / m_g (so Z_g b_g = u_g)

The per-allele effect of variant j on the raw ALT dosage x is b_j s_j with s_j =
1 / sqrt(2 p_j (1 - p_j)): sum_j x_ij b_j s_j = u_ig + sum_j 2 p_j b_j s_j (a constant) for
samples without missing calls.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from scipy.stats import chi2

from dreml.errors import InputError
from dreml.liability import LiabilityScale

STATE_SUFFIX = ".fit.npz"
STATE_VERSION = 1


@dataclass(frozen=True)
class VariantTable:
    """Rows = (component, variant) pairs of the fit, component by component in variant order.

    Fields (all shape (R,)): component (index g), store (index into the fit's stores),
    index (into that store's variants), id, contig, position, ref, alt (ALT is the counted
    allele), frequency (p_j of ALT used to standardise).
    """

    component: np.ndarray
    store: np.ndarray
    index: np.ndarray
    id: np.ndarray
    contig: np.ndarray
    position: np.ndarray
    ref: np.ndarray
    alt: np.ndarray
    frequency: np.ndarray

    @property
    def scale(self) -> np.ndarray:
        """s_j = 1 / sqrt(2 p_j (1 - p_j)), shape (R,)."""
        return 1.0 / np.sqrt(2.0 * self.frequency * (1.0 - self.frequency))

    def rows_of(self, g: int) -> np.ndarray:
        return np.flatnonzero(self.component == g)


@dataclass(frozen=True)
class FitState:
    """What post-REML work needs from a fit (module docstring); `save` / `load` as .npz.

    Fields:
        names: component names, then "residual".
        theta, covariance: shape (G + 1,) and (G + 1, G + 1).
        beta, beta_covariance, covariate_names: fixed effects, shape (p,) and (p, p).
        Py, KPy: shape (n,) and (G, n).
        sample_fid, sample_iid: shape (n,).
        store_paths: the fit's stores.
        m: variants per component, shape (G,).
        variants: `VariantTable`.
        snp_effect: standardised-scale BLUP per variant row, shape (R,) (zeros when not computed).
    """

    names: tuple[str, ...]
    theta: np.ndarray
    covariance: np.ndarray
    beta: np.ndarray
    beta_covariance: np.ndarray
    covariate_names: tuple[str, ...]
    Py: np.ndarray
    KPy: np.ndarray
    sample_fid: np.ndarray
    sample_iid: np.ndarray
    store_paths: tuple[str, ...]
    m: np.ndarray
    variants: VariantTable
    snp_effect: np.ndarray

    @property
    def n_components(self) -> int:
        return len(self.names) - 1

    def blup(self) -> np.ndarray:
        """u_g = theta_g K_g P y, shape (G, n)."""
        return self.theta[:-1, None] * self.KPy

    def effect_per_allele(self) -> np.ndarray:
        """b_j s_j: effect per copy of the ALT allele on the raw dosage scale, shape (R,)."""
        return self.snp_effect * self.variants.scale

    def save(self, path: str | Path) -> Path:
        """Write the state to `path` (an .npz) through a temporary name and a rename."""
        path = Path(path)
        arrays = {f"variants_{f.name}": getattr(self.variants, f.name) for f in fields(VariantTable)}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "variants":
                arrays[f.name] = np.asarray(value)
        arrays["state_version"] = np.asarray(STATE_VERSION)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FitState:
        """Read a state written by `save`; InputError naming the file when it is not one."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such fit state (written by `dreml fit` as PREFIX{STATE_SUFFIX})")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a dreml fit state ({exc})") from exc
        if arrays.get("state_version") is None or int(arrays["state_version"]) != STATE_VERSION:
            raise InputError(f"{path}: not a dreml fit state of version {STATE_VERSION}")
        variants = VariantTable(**{f.name: arrays[f"variants_{f.name}"] for f in fields(VariantTable)})
        values = {f.name: arrays[f.name] for f in fields(cls) if f.name != "variants"}
        for name in ("names", "covariate_names", "store_paths"):
            values[name] = tuple(str(v) for v in values[name])
        return cls(**values, variants=variants)


@dataclass(frozen=True)
class ComponentEstimate:
    """One genetic component's row of the report."""

    name: str
    m: int
    variance: float
    se: float
    h2: float
    h2_se: float
    h2_mc_se: float
    at_boundary: bool


@dataclass(frozen=True)
class FixedEffect:
    """One column of X: its GLS estimate at theta and SE."""

    name: str
    estimate: float
    se: float


@dataclass(frozen=True)
class LikelihoodRatioTest:
    """LRT of the fitted model against a reduced one (GCTA's logL0 / LRT / df / Pval rows).

    Fields:
        dropped: the components left out of the reduced model (all genetic ones: the
            closed-form null model y = X beta + e).
        loglik0: the reduced model's REML log-likelihood; loglik0_se its Monte Carlo SE.
        lrt: 2 (logL - logL0); lrt_se: its Monte Carlo SE, 2 sqrt(se^2 + se0^2) (an upper
            bound: the two estimates share probes, so their errors are positively correlated).
        df: components dropped.
        pvalue: 0.5 P(chi2_df > LRT), as GCTA (a variance tested at its boundary).
    """

    dropped: tuple[str, ...]
    loglik0: float
    loglik0_se: float
    lrt: float
    lrt_se: float
    df: int
    pvalue: float

    @classmethod
    def compare(
        cls, loglik: float, loglik_se: float, loglik0: float, loglik0_se: float, dropped: tuple[str, ...]
    ) -> LikelihoodRatioTest:
        lrt = 2.0 * (loglik - loglik0)
        df = len(dropped)
        return cls(
            dropped,
            loglik0,
            loglik0_se,
            lrt,
            2.0 * float(np.hypot(loglik_se, loglik0_se)),
            df,
            float(0.5 * chi2.sf(max(lrt, 0.0), df)),
        )


def null_loglik(y: np.ndarray, X: np.ndarray) -> float:
    """REML log-likelihood of y = X beta + e, e ~ N(0, theta_e I), at its maximum (no pass).

    theta_e = y~^T y~ / (n - p), and with H = theta_e I (constant omitted, as the engine):
    l0 = -1/2 [(n - p) log theta_e + log|X^T X| + (n - p)].
    """
    n, p = X.shape
    y_res = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    theta_e = float(y_res @ y_res) / (n - p)
    return -0.5 * ((n - p) * np.log(theta_e) + np.linalg.slogdet(X.T @ X)[1] + (n - p))


@dataclass(frozen=True)
class FitResult:
    """A fit's report: every field of the JSON (docs/cli.md) and the `state`.

    Fields mirror `dreml.reml.RemlResult` for the whole model, plus: components (one
    `ComponentEstimate` each), fixed_effects, lrt (None when not computed), samples (counts
    at each alignment step), variant_filter (the filter table), inputs (files and settings),
    liability (a case-control trait's `LiabilityScale`, set by the caller who knows the
    prevalence: `dataclasses.replace(result, liability=...)`; None otherwise).
    """

    components: tuple[ComponentEstimate, ...]
    residual_variance: float
    residual_se: float
    vp: float
    vp_se: float
    h2_total: float
    h2_total_se: float
    h2_total_mc_se: float
    loglik: float
    loglik_se: float
    n_samples: int
    n_covariates: int
    iterations: int
    decrement: float
    passes: int
    passes_by_kind: dict
    method: str
    method_reason: str
    converged: bool
    status: str
    seed: int
    config: dict
    covariance: list
    score: list
    fixed_effects: tuple[FixedEffect, ...]
    lrt: LikelihoodRatioTest | None
    samples: dict
    variant_filter: str
    inputs: dict
    history: list
    timings: dict
    liability: LiabilityScale | None = None
    state: FitState | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The JSON-serialisable report (without the state's per-sample and per-variant arrays).

        With `liability`, its `prevalence` and `case_fraction`, and the liability-scale h2
        and SE of each component (`h2_liability`, `h2_liability_se`) and of their sum
        (`h2_total_liability`, `h2_total_liability_se`); without, none of these keys.
        """
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("state", "liability")}
        out["components"] = [asdict(c) for c in self.components]
        out["fixed_effects"] = [asdict(e) for e in self.fixed_effects]
        out["lrt"] = None if self.lrt is None else asdict(self.lrt)
        if self.liability is not None:
            factor = self.liability.factor
            for c in out["components"]:
                c.update(h2_liability=c["h2"] * factor, h2_liability_se=c["h2_se"] * factor)
            out.update(
                asdict(self.liability), h2_total_liability=self.h2_total * factor, h2_total_liability_se=self.h2_total_se * factor
            )
        return json.loads(json.dumps(out, default=_plain))

    @classmethod
    def from_dict(cls, report: dict, state: FitState | None = None) -> FitResult:
        """The result a `to_dict()` report describes (a saved PREFIX.json read back; keys it
        does not describe, such as the run's `argv`, are ignored)."""
        values = {f.name: report[f.name] for f in fields(cls) if f.name not in ("state", "liability")}
        estimate_fields = [f.name for f in fields(ComponentEstimate)]  # not the derived liability-scale h2
        values["components"] = tuple(ComponentEstimate(**{k: c[k] for k in estimate_fields}) for c in report["components"])
        values["fixed_effects"] = tuple(FixedEffect(**e) for e in report["fixed_effects"])
        lrt = report["lrt"]
        values["lrt"] = None if lrt is None else LikelihoodRatioTest(**{**lrt, "dropped": tuple(lrt["dropped"])})
        if report.get("prevalence") is not None:
            values["liability"] = LiabilityScale(report["prevalence"], report["case_fraction"])
        return cls(**values, state=state)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value)}")
