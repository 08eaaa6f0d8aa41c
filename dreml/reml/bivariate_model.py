"""The stacked space of a bivariate fit, its components and the parametrisations of r_g.

Notation (docs/math.md, "Bivariate REML"), used by every `dreml.reml.bivariate*` module:
    n            the operator's samples; S_a, S_b the rows observed for traits a and b
    n_a, n_b     |S_a|, |S_b|;  N = n_a + n_b, the stacked space v = [v_a; v_b]
    pad_S(u)     the n-vector holding u on the rows S and 0 elsewhere
    O            the samples in both S_a and S_b (measured for both traits);
                 J (n_a x n_b), J_ij = 1 when S_a[i] = S_b[j]
    K_aa         K_g[S_a, S_a], and K_ab, K_ba, K_bb alike
The covariance of y = [y_a; y_b] is V = sum_c theta_c A_c over C components c:
    A_ga  = [[K_aa, 0], [0, 0]]   A_gb = [[0, 0], [0, K_bb]]   A_gab = [[0, K_ab], [K_ba, 0]]
    A_ea  = [[I, 0], [0, 0]]      A_eb = [[0, 0], [0, I]]      A_eab = [[0, J], [J^T, 0]]
per genetic component g (3 G), then the residual's (3, or 2 without a residual covariance: C(e)
is left out, as GCTA does, when fewer than `RESIDUAL_COVARIANCE_MIN_FRACTION` of the samples are
measured for both traits), in GCTA's order:
    theta = (V(G1)_tr1, V(G1)_tr2, C(G1)_tr12, ..., V(e)_tr1, V(e)_tr2, [C(e)_tr12]).
One stacked pass of K_g on [pad_a(V_a) | pad_b(V_b)] gives every block product
(`stacked_products`). V = S (Sigma_g (x) K_g + Sigma_e (x) I) S^T with S the selection of the
stacked rows from the 2n rows of both traits on all samples, so V is positive definite when
every Sigma_g = [[s2_ga, s_gab], [s_gab, s2_gb]] is positive semi-definite and Sigma_e positive
definite (the start keeps them so); elsewhere V may still be positive definite.

The optimizer works on parameters phi of a `Parametrisation`: the full model (phi = theta), or
r_g fixed at rho for every genetic component (`--rg-fix`): phi drops the covariances and
    s_gab = rho sqrt(s2_ga s2_gb),   d s_gab / d s2_ga = rho sqrt(s2_gb / s2_ga) / 2
(GCTA's `update_A` uses the same derivative). Its score and average information follow from the
Jacobian D = d theta / d phi: s_phi = D^T s_theta, AI_phi = D^T AI_theta D.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dreml.reml.evaluation import haseman_elston

# GCTA drops the residual covariance when fewer than 10% of the samples are measured for both traits
RESIDUAL_COVARIANCE_MIN_FRACTION = 0.1


class StackedLayout:
    """Two traits' rows of one operator and the components over their stacked space.

    Arguments:
        n: the operator's samples.
        rows: (S_a, S_b), each unique indices into the operator's samples.
        component_names: the G genetic components' names.
        residual_covariance: whether C(e)_tr12 is a component; None: GCTA's rule (module docstring).
    """

    def __init__(
        self, n: int, rows: tuple[np.ndarray, np.ndarray], component_names: Sequence[str], residual_covariance: bool | None = None
    ) -> None:
        self.n = int(n)
        self.rows = tuple(np.asarray(r, dtype=np.int64) for r in rows)
        for r in self.rows:
            if r.ndim != 1 or r.size == 0 or r.min() < 0 or r.max() >= n or np.unique(r).size != r.size:
                raise ValueError(f"rows must be non-empty unique sample indices in [0, {n})")
        self.names = tuple(component_names)
        self.G = len(self.names)
        common, self.oa, self.ob = np.intersect1d(self.rows[0], self.rows[1], assume_unique=True, return_indices=True)
        self.n_overlap = int(common.size)
        self.n_union = int(np.union1d(self.rows[0], self.rows[1]).size)
        rule = self.n_overlap >= RESIDUAL_COVARIANCE_MIN_FRACTION * self.n_union and self.n_overlap > 0
        if residual_covariance and self.n_overlap == 0:
            raise ValueError("a residual covariance needs samples measured for both traits; none are")
        self.residual_covariance = rule if residual_covariance is None else bool(residual_covariance)
        self.residual_covariance_reason = (
            "requested"
            if residual_covariance is not None
            else f"GCTA's rule: {self.n_overlap} of {self.n_union} samples ({self.n_overlap / self.n_union:.1%}) are measured "
            f"for both traits, {'at least' if rule else 'fewer than'} {RESIDUAL_COVARIANCE_MIN_FRACTION:.0%}"
        )

    # ------------------------------------------------------------------ components
    @property
    def sizes(self) -> tuple[int, int]:
        """(n_a, n_b)."""
        return (len(self.rows[0]), len(self.rows[1]))

    @property
    def N(self) -> int:
        return sum(self.sizes)

    @property
    def C(self) -> int:
        return 3 * self.G + 2 + int(self.residual_covariance)

    @property
    def kinds(self) -> tuple[str, ...]:
        """'a', 'b' or 'ab' per component: the trait whose variance it is, or a covariance."""
        return ("a", "b", "ab") * self.G + ("a", "b", "ab")[: 2 + int(self.residual_covariance)]

    @property
    def covariances(self) -> np.ndarray:
        """Whether each component is a covariance, shape (C,)."""
        return np.array([k == "ab" for k in self.kinds])

    @property
    def residual(self) -> np.ndarray:
        """Whether each component is residual, shape (C,)."""
        return np.arange(self.C) >= 3 * self.G

    def index(self, g: int | None, kind: str) -> int:
        """The component of genetic g (None: the residual) and kind ('a', 'b', 'ab')."""
        k = ("a", "b", "ab").index(kind)
        if g is None and k == 2 and not self.residual_covariance:
            raise ValueError("this model has no residual covariance")
        return 3 * (self.G if g is None else g) + k

    def labels(self) -> tuple[str, ...]:
        """GCTA's row names: V(G)_tr1, V(G)_tr2, C(G)_tr12 (G1, G2, ... with several), V(e)_tr1, ..."""
        tags = [""] if self.G == 1 else [str(g + 1) for g in range(self.G)]
        out = [f"{p}(G{t})_tr{s}" for t in tags for p, s in (("V", 1), ("V", 2), ("C", 12))]
        return tuple(out + ["V(e)_tr1", "V(e)_tr2", "C(e)_tr12"][: 2 + int(self.residual_covariance)])

    # ------------------------------------------------------------------ the stacked space
    def split(self, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(V_a, V_b) of a stacked block."""
        return V[: self.sizes[0]], V[self.sizes[0] :]

    def padded(self, V: np.ndarray) -> np.ndarray:
        """[pad_a(V_a) | pad_b(V_b)], shape (n, 2 k), from a stacked (N, k) block."""
        Va, Vb = self.split(V)
        out = np.zeros((self.n, 2 * V.shape[1]))
        out[self.rows[0], : V.shape[1]] = Va
        out[self.rows[1], V.shape[1] :] = Vb
        return out

    def J(self, Vb: np.ndarray) -> np.ndarray:
        """J V_b: V_b's rows of the samples in O at their rows of trait a, shape (n_a, k)."""
        out = np.zeros((self.sizes[0],) + Vb.shape[1:])
        out[self.oa] = Vb[self.ob]
        return out

    def Jt(self, Va: np.ndarray) -> np.ndarray:
        """J^T V_a, shape (n_b, k)."""
        out = np.zeros((self.sizes[1],) + Va.shape[1:])
        out[self.ob] = Va[self.oa]
        return out

    def blocks(self, KU: np.ndarray, k: int) -> dict[str, np.ndarray]:
        """The block products from one stacked pass KU = K_g [pad_a(V_a) | pad_b(V_b)] (G, n, 2 k):
        "aa" = K_aa V_a, "ba" = K_ba V_a, "ab" = K_ab V_b, "bb" = K_bb V_b, each (G, n_., k)."""
        KA, KB = KU[..., :k], KU[..., k:]
        ra, rb = self.rows
        return {"aa": KA[:, ra], "ba": KA[:, rb], "ab": KB[:, ra], "bb": KB[:, rb]}

    def apply_V(self, theta: np.ndarray, V: np.ndarray, blocks: dict[str, np.ndarray]) -> np.ndarray:
        """V(theta) V from the block products of V, shape (N, k)."""
        G = self.G
        Va, Vb = self.split(V)
        a, b, c = theta[0 : 3 * G : 3], theta[1 : 3 * G : 3], theta[2 : 3 * G : 3]
        top = np.tensordot(a, blocks["aa"], axes=1) + np.tensordot(c, blocks["ab"], axes=1) + theta[3 * G] * Va
        bottom = np.tensordot(c, blocks["ba"], axes=1) + np.tensordot(b, blocks["bb"], axes=1) + theta[3 * G + 1] * Vb
        if self.residual_covariance:
            top = top + theta[3 * G + 2] * self.J(Vb)
            bottom = bottom + theta[3 * G + 2] * self.Jt(Va)
        return np.vstack([top, bottom])

    def component_columns(self, v: np.ndarray, blocks: dict[str, np.ndarray]) -> np.ndarray:
        """A_c v for every component of one stacked vector v, shape (N, C), from its block products
        (k = 1)."""
        va, vb = self.split(v)
        za, zb = np.zeros(self.sizes[0]), np.zeros(self.sizes[1])
        cols = []
        for g in range(self.G):
            cols += [
                np.r_[blocks["aa"][g, :, 0], zb],
                np.r_[za, blocks["bb"][g, :, 0]],
                np.r_[blocks["ab"][g, :, 0], blocks["ba"][g, :, 0]],
            ]
        cols += [np.r_[va, zb], np.r_[za, vb]]
        if self.residual_covariance:
            cols.append(np.r_[self.J(vb), self.Jt(va)])
        return np.column_stack(cols)


class Parametrisation:
    """phi -> theta for the full model or for r_g fixed at `rho` (module docstring).

    Arguments:
        layout: the fit's `StackedLayout`.
        rho: None for the full model; else every genetic component's r_g is fixed at rho.
        constrain: genetic variances >= 0 (with r_g fixed at rho != 0 they stay >= `floor`,
            where the Jacobian is finite); False lets them go negative (full model, rho = 0).
        scale: (Vp_a, Vp_b), the traits' phenotypic variances: the floor is 1e-6 of them.
    """

    def __init__(
        self, layout: StackedLayout, rho: float | None, *, constrain: bool = True, scale: tuple[float, float] = (1.0, 1.0)
    ) -> None:
        self.layout, self.rho = layout, None if rho is None else float(rho)
        C = layout.C
        genetic_cov = layout.covariances & ~layout.residual
        self.free = np.ones(C, dtype=bool) if rho is None else ~genetic_cov  # theta entries that are phi
        self.q = int(self.free.sum())
        kinds = np.array(layout.kinds)[self.free]
        residual = layout.residual[self.free]
        variance = kinds != "ab"
        trait_scale = np.where(kinds == "a", scale[0], scale[1])
        smooth = rho is not None and rho != 0.0  # s_gab = rho sqrt(a b) needs a, b > 0
        self.lower = np.full(self.q, -np.inf)
        self.lower[variance & ~residual] = 1e-6 * trait_scale[variance & ~residual] if smooth else (0.0 if constrain else -np.inf)
        self.residual_variance = variance & residual  # floored at 1e-6 sum|theta| (as the engine)
        self.holdable = variance & ~residual & np.isfinite(self.lower)
        self.names = tuple(np.array(layout.labels())[self.free])

    def theta(self, phi: np.ndarray) -> np.ndarray:
        out = np.zeros(self.layout.C)
        out[self.free] = phi
        if self.rho:
            for g in range(self.layout.G):
                a, b = out[3 * g], out[3 * g + 1]
                out[3 * g + 2] = self.rho * np.sqrt(max(a, 0.0) * max(b, 0.0))
        return out

    def jacobian(self, phi: np.ndarray) -> np.ndarray:
        """D = d theta / d phi, shape (C, q)."""
        D = np.zeros((self.layout.C, self.q))
        D[np.flatnonzero(self.free), np.arange(self.q)] = 1.0
        if self.rho:
            theta = self.theta(phi)
            column = np.cumsum(self.free) - 1  # phi index of each free theta entry
            for g in range(self.layout.G):
                a, b = max(theta[3 * g], 1e-300), max(theta[3 * g + 1], 1e-300)
                D[3 * g + 2, column[3 * g]] = 0.5 * self.rho * np.sqrt(b / a)
                D[3 * g + 2, column[3 * g + 1]] = 0.5 * self.rho * np.sqrt(a / b)
        return D

    def from_theta(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta, dtype=np.float64)[self.free].copy()

    def project(self, phi: np.ndarray) -> np.ndarray:
        """Variances onto their lower bounds, residual variances >= 1e-6 sum|phi|; covariances free."""
        out = np.maximum(phi, self.lower)
        floor = 1e-6 * float(np.abs(out).sum())
        out[self.residual_variance] = np.maximum(out[self.residual_variance], floor)
        return out

    def held(self, phi: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Genetic variances on their lower bound whose score points outwards (the active set)."""
        return self.holdable & (phi <= self.lower) & (score <= 0)


def moment_start(
    layout: StackedLayout, trait_moments: Sequence[tuple[np.ndarray, np.ndarray, float]], cross: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Bivariate Haseman-Elston: sum_d tr(A_c A_d) theta_d = y~^T A_c y~ splits into three systems.

    tr(A_c A_d) = 0 between a trait's components and the other trait's or the covariances (their
    blocks do not meet), so each trait gets the univariate start (`haseman_elston`, variances
    >= 1% of its Vp) and the covariances solve their own system; each covariance is then
    clipped to |r| <= 0.9 with its two variances, so that the start's V is positive definite
    (module docstring).

    Arguments:
        layout: the fit's layout.
        trait_moments: per trait (T, shape (G + 1, G + 1); q, shape (G + 1,); Vp), over its
            G genetic variances and its residual variance.
        cross: (T, q) over the G genetic covariances and, with a residual covariance, C(e)_tr12.

    Returns:
        theta, shape (C,).
    """
    G = layout.G
    theta = np.zeros(layout.C)
    for t, (T, q, vp) in enumerate(trait_moments):
        est = haseman_elston(T, q, vp)
        theta[[*range(t, 3 * G, 3), 3 * G + t]] = est
    T, q = cross
    cov, *_ = np.linalg.lstsq(T, q, rcond=None)
    covs = [3 * g + 2 for g in range(G + int(layout.residual_covariance))]  # C(G1)_tr12, ..., [C(e)_tr12]
    for c, value in zip(covs, cov):
        bound = 0.9 * np.sqrt(theta[c - 2] * theta[c - 1])
        theta[c] = np.clip(value, -bound, bound)
    return theta
