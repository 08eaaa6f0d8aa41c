"""Manhattan and QQ plots of a marginal GWAS (`dreml.gwas.marginal`), as PNG files.

Notation: per tested variant j, P_j its two-sided P value and L_j = -log10 P_j. L is taken
from the result's `log10_p` (finite below 1e-300, where P itself underflows to 0), so
no variant is lost or clipped; NA (untested) variants are left out of both plots.

QQ plot: the m tested L sorted, against the expected L of the i-th smallest of m uniform
order statistics, -log10(i / (m + 1)) (the mean of Beta(i, m - i + 1)), with the pointwise
95% band of that Beta distribution, and the genomic inflation factor

    lambda_GC = median_j chi2_j / F^-1_{chi2_1}(1/2),   chi2_j = F^-1_{chi2_1}(1 - P_j)

(Devlin and Roeder 1999; F^-1_{chi2_1}(1/2) = 0.4549), the same value the marginal result
records (`TraitResult.lambda_gc`, which takes chi2_j = T_STAT^2 where P underflows; both are
above the median there).

Manhattan plot: L against the genomic position, contigs side by side in store order (order
of first appearance), alternating colours, boundaries marked, and the genome-wide line at
P = 5e-8. Points that would fall on the same pixel are drawn once.

Figures are drawn with matplotlib's Agg canvas (no pyplot state) and written through a
temporary name, then renamed, as `dreml.outputs.write_plot` does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import special, stats

from dreml.gwas.marginal import CHI2_MEDIAN, MarginalResult, TraitResult

if TYPE_CHECKING:
    from dreml.gwas.mixed import MixedResult, MixedTraitResult

logger = logging.getLogger(__name__)

GENOME_WIDE_P = 5e-8
COLOURS = ("#1f4e79", "#7fa7d1")
# pixels of the figures (width, height at DPI); points are deduplicated on this grid
SIZE_IN = (12.0, 4.5)
QQ_SIZE_IN = (5.5, 5.5)
DPI = 100


def neg_log10_p(p: np.ndarray, log10_p: np.ndarray | None = None) -> np.ndarray:
    """L = -log10 P, NaN where P is NA. With `log10_p` given (the result's), that is used;
    otherwise P = 0 takes the smallest positive float64's L (about 323.3)."""
    if log10_p is not None:
        return -np.asarray(log10_p, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log10(np.where(p == 0, np.nextafter(0.0, 1.0), p))


def lambda_gc(p: np.ndarray, log10_p: np.ndarray | None = None) -> float:
    """Genomic inflation factor median chi2 / 0.4549 over the non-NA P (module docstring).

    chi2_j = F^-1_{chi2_1}(1 - P_j); a variant is NA where L_j (from `log10_p` if given, else
    from P_j) is NaN. Where P_j underflows to 0 (L_j finite), chi2_j is taken as +inf: it
    only ever sits above the median unless half the variants underflow. NaN when no P is given.
    """
    p = np.asarray(p, dtype=np.float64)
    ok = ~np.isnan(neg_log10_p(p, log10_p))
    if not ok.any():
        return float("nan")
    P = p[ok]
    chi2 = np.where(P > 0, stats.chi2.isf(np.where(P > 0, P, 1.0), 1), np.inf)
    return float(np.median(chi2) / CHI2_MEDIAN)


def _canvas(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    """Write `fig` as PNG through PATH.tmp.png, then rename; the temporary file never stays."""
    path = Path(path)
    tmp = Path(str(path) + ".tmp.png")
    try:
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _thin(x: np.ndarray, y: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """Indices of one point per (x, y) cell of an nx x ny grid over the data's range."""
    if x.size == 0:
        return np.arange(0)

    def cell(v, k):
        lo, hi = float(v.min()), float(v.max())
        return np.zeros(v.size, np.int64) if hi <= lo else np.minimum((v - lo) / (hi - lo) * k, k - 1).astype(np.int64)

    _, keep = np.unique(cell(x, nx) * ny + cell(y, ny), return_index=True)
    return keep


def manhattan_coordinates(chrom: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Plot x of every variant and (contig, start, end) per contig, in order of first appearance.

    Each contig spans [min pos, max pos] of its variants, shifted to follow the previous one
    with a gap of 1% of the total span.
    """
    chrom = np.asarray(chrom).astype(str)
    pos = np.asarray(pos, dtype=np.float64)
    names, first, inverse = np.unique(chrom, return_index=True, return_inverse=True)
    order = np.argsort(first)  # contig codes in store order
    lo = np.array([pos[inverse == c].min() for c in range(len(names))])
    hi = np.array([pos[inverse == c].max() for c in range(len(names))])
    gap = 0.01 * max(1.0, float(np.sum(hi - lo + 1)))
    offset = np.empty(len(names))
    spans, x0 = [], 0.0
    for c in order:
        offset[c] = x0 - lo[c]
        spans.append((str(names[c]), x0, x0 + hi[c] - lo[c]))
        x0 += hi[c] - lo[c] + 1 + gap
    return pos + offset[inverse], spans


def write_manhattan(
    path: str | Path, chrom: np.ndarray, pos: np.ndarray, p: np.ndarray, title: str, *, log10_p: np.ndarray | None = None
) -> Path:
    """Manhattan plot of -log10 P by position (module docstring) to `path` (PNG).

    Arguments:
        chrom: contig per variant, shape (m,). pos: position, shape (m,).
        p: P value, NaN for NA, shape (m,). log10_p: the result's log10 P (preferred: finite
            below the float64 range), shape (m,).
    """
    x, spans = manhattan_coordinates(chrom, pos)
    L = neg_log10_p(p, log10_p)
    contig = np.searchsorted([s[1] for s in spans], x, side="right") - 1
    ok = ~np.isnan(L)
    x, L, contig = x[ok], L[ok], contig[ok]
    keep = _thin(x, L, int(SIZE_IN[0] * DPI), int(SIZE_IN[1] * DPI))
    x, L, contig = x[keep], L[keep], contig[keep]
    fig = _canvas(SIZE_IN)
    ax = fig.add_subplot()
    for parity, colour in enumerate(COLOURS):
        sel = contig % 2 == parity
        ax.scatter(x[sel], L[sel], s=5, c=colour, linewidths=0, rasterized=True)
    for _, start, _ in spans[1:]:
        ax.axvline(start, color="0.85", linewidth=0.6, zorder=0)
    ax.axhline(-np.log10(GENOME_WIDE_P), color="firebrick", linestyle="--", linewidth=0.8, label="P = 5e-8")
    ax.set_xticks([(a + b) / 2 for _, a, b in spans], [name for name, _, _ in spans], fontsize=8 if len(spans) < 30 else 5)
    if spans:
        pad = 0.005 * (spans[-1][2] - spans[0][1] + 1)
        ax.set_xlim(spans[0][1] - pad, spans[-1][2] + pad)
    ax.set_ylim(0, max(float(L.max()) if L.size else 0.0, -np.log10(GENOME_WIDE_P)) * 1.15)
    ax.set_xlabel("contig")
    ax.set_ylabel("-log10 P")
    ax.set_title(f"{title}  ({int(ok.sum())} variants tested, {int((~ok).sum())} NA)", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def qq_figure(p: np.ndarray, title: str, *, log10_p: np.ndarray | None = None):
    """(the QQ figure, lambda_GC): expected against observed -log10 P with the 95% band,
    lambda_GC written on it as "lambda_GC = %.4f" (module docstring)."""
    L = neg_log10_p(p, log10_p)
    L = np.sort(L[~np.isnan(L)])[::-1]  # largest first: i = 1 is the smallest P
    m = L.size
    lam = lambda_gc(p, log10_p)
    i = np.arange(1, m + 1, dtype=np.float64)
    expected = -np.log10(i / (m + 1))
    fig = _canvas(QQ_SIZE_IN)
    ax = fig.add_subplot()
    if m:
        # the band on a thinned set of ranks (it is smooth), the points on a pixel grid
        ranks = np.unique(np.round(np.geomspace(1, m, min(m, 400))).astype(np.int64))
        lo = -np.log10(special.betaincinv(ranks, m - ranks + 1, 0.975))
        hi = -np.log10(special.betaincinv(ranks, m - ranks + 1, 0.025))
        ax.fill_between(expected[ranks - 1], lo, hi, color="0.85", linewidth=0, label="95% band")
        keep = _thin(expected, L, int(QQ_SIZE_IN[0] * DPI), int(QQ_SIZE_IN[1] * DPI))
        ax.scatter(expected[keep], L[keep], s=4, c=COLOURS[0], linewidths=0, rasterized=True)
        top = float(expected[0])
        ax.plot([0, top], [0, top], color="firebrick", linewidth=0.8)
    ax.set_xlabel("expected -log10 P")
    ax.set_ylabel("observed -log10 P")
    ax.set_title(title, fontsize=10)
    ax.text(0.04, 0.96, f"lambda_GC = {lam:.4f}", transform=ax.transAxes, va="top", fontsize=9)
    if m:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    return fig, lam


def write_qq(path: str | Path, p: np.ndarray, title: str, *, log10_p: np.ndarray | None = None) -> float:
    """QQ plot of the non-NA P (module docstring) to `path` (PNG); returns the lambda_GC printed on it.

    Arguments:
        p: P values, NaN for NA, shape (m,). log10_p: the result's log10 P, shape (m,).
    """
    fig, lam = qq_figure(p, title, log10_p=log10_p)
    _save(fig, path)
    return lam


def write_trait_plots(
    result: MarginalResult | MixedResult,
    trait: TraitResult | MixedTraitResult | str,
    prefix: str | Path,
    *,
    test: str | None = None,
) -> list[Path]:
    """PREFIX.<trait>.manhattan.png and PREFIX.<trait>.qq.png of one trait of `result` (a
    marginal or a mixed-model result: both carry chrom, pos and per trait p, log10_p, n).

    Arguments:
        trait: one of `result.traits`, or its name.
        test: the test named in the titles (default: "marginal GWAS, <missing mode>").
    """
    if isinstance(trait, str):
        by_name = {t.name: t for t in result.traits}
        if trait not in by_name:
            raise KeyError(f"no trait {trait!r} in the result (traits: {', '.join(by_name)})")
        trait = by_name[trait]
    if not test:
        assert isinstance(result, MarginalResult)  # a mixed-model result comes with its test's name
        test = f"marginal GWAS, {result.missing}"
    title = f"{trait.name}: {test}, n = {trait.n}"
    manhattan = write_manhattan(
        f"{prefix}.{trait.name}.manhattan.png", result.chrom, result.pos, trait.p, title, log10_p=trait.log10_p
    )
    qq = Path(f"{prefix}.{trait.name}.qq.png")
    write_qq(qq, trait.p, title, log10_p=trait.log10_p)
    return [manhattan, qq]
