"""`dreml.gwas.plots`: lambda_GC against closed forms, the QQ figure's printed value, PNG files
written through temporary names, NA variants and P below the float64 range."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dreml.gwas.marginal import CHI2_MEDIAN, MarginalResult, TraitResult
from dreml.gwas.plots import (
    lambda_gc,
    manhattan_coordinates,
    neg_log10_p,
    qq_figure,
    write_manhattan,
    write_qq,
    write_trait_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _uniform(m: int) -> np.ndarray:
    """The m uniform quantiles (i - 1/2) / m; for odd m the median is exactly 1/2."""
    return (np.arange(1, m + 1) - 0.5) / m


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def _result(m: int = 3001, seed: int = 0) -> tuple[MarginalResult, TraitResult]:
    """A result of one trait over three contigs (store order 2, 10, 1): uniform P with NA
    variants and three P below the float64 range (log10 P = -400, P = 0)."""
    rng = np.random.default_rng(seed)
    chrom = np.array(["2"] * (m // 3) + ["10"] * (m // 3) + ["1"] * (m - 2 * (m // 3)))
    pos = np.concatenate([np.sort(rng.integers(1, 10**6, size=int(np.sum(chrom == c)))) for c in ("2", "10", "1")])
    p = rng.permutation(_uniform(m))
    p[rng.choice(m, m // 60, replace=False)] = np.nan
    tiny = np.flatnonzero(~np.isnan(p))[:3]
    with np.errstate(divide="ignore"):
        log10_p = np.log10(p)
    p[tiny], log10_p[tiny] = 0.0, -400.0
    nan = np.full(m, np.nan)
    trait = TraitResult(
        name="height",
        n=100,
        covariate_names=("intercept",),
        beta=nan,
        se=nan,
        t_stat=nan,
        p=p,
        log10_p=log10_p,
        a1_freq=nan,
        obs_ct=np.full(m, 100),
        skipped={},
        lambda_gc=lambda_gc(p, log10_p),
    )
    result = MarginalResult(
        missing="complete-case",
        chrom=chrom,
        pos=pos,
        variant_id=np.arange(m).astype(str),
        ref=np.full(m, "A"),
        alt=np.full(m, "C"),
        traits=(trait,),
        passes=1,
        timings={},
        n_driver_variants=0,
    )
    return result, trait


def test_lambda_gc__uniform_is_one():
    # the median of (i - 1/2)/m over odd m is 1/2, whose chi2_1 quantile is the median itself
    assert lambda_gc(_uniform(10001)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("c", [0.8, 1.0, 1.37])
def test_lambda_gc__scaled_chi2_is_the_scale(c):
    # chi2_j = c * q_j with q_j the chi2_1 quantiles of uniform P: median chi2 = c * 0.4549...
    q = stats.chi2.isf(_uniform(2001), 1)
    P = stats.chi2.sf(c * q, 1)
    assert lambda_gc(P) == pytest.approx(c, rel=1e-10)
    assert CHI2_MEDIAN == pytest.approx(0.454936423119572, rel=1e-12)


def test_lambda_gc__na_ignored_and_underflow_above_median():
    p = _uniform(1001)
    with_na = np.concatenate([p, [np.nan] * 40])
    assert lambda_gc(with_na) == pytest.approx(lambda_gc(p), rel=1e-14)
    # the 10 smallest P underflow (0, log10 P = -400): still above the median
    q = p.copy()
    q[:10] = 0.0
    log10_q = np.log10(np.where(q > 0, q, 1.0))
    log10_q[:10] = -400.0
    assert lambda_gc(q, log10_q) == pytest.approx(lambda_gc(p), rel=1e-14)
    assert np.isnan(lambda_gc(np.full(5, np.nan)))


def test_neg_log10_p__below_float64_range():
    L = neg_log10_p(np.array([0.0, 0.1, np.nan]), np.array([-400.0, -1.0, np.nan]))
    np.testing.assert_array_equal(L[:2], [400.0, 1.0])
    assert np.isnan(L[2])
    assert neg_log10_p(np.array([0.0]))[0] == pytest.approx(323.3, abs=0.1)  # no log10 P: smallest float


def test_qq_figure__prints_the_computed_lambda():
    result, trait = _result()
    fig, lam = qq_figure(trait.p, "t", log10_p=trait.log10_p)
    assert lam == lambda_gc(trait.p, trait.log10_p) == trait.lambda_gc
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert f"lambda_GC = {lam:.4f}" in texts
    assert lam == pytest.approx(1.0, abs=0.01)


def test_manhattan_coordinates__contigs_in_store_order():
    chrom = np.array(["2", "2", "10", "10", "10", "1"])
    pos = np.array([100, 300, 5, 50, 20, 7])
    x, spans = manhattan_coordinates(chrom, pos)
    assert [s[0] for s in spans] == ["2", "10", "1"]
    assert spans[0][1] == 0.0 and spans[0][2] == 200.0
    for name, start, end in spans:
        xs = x[chrom == name]
        assert xs.min() == start and xs.max() == end
    assert spans[0][2] < spans[1][1] < spans[1][2] < spans[2][1]
    np.testing.assert_array_equal(np.diff(x[2:5]), np.diff(pos[2:5]))  # within a contig: shifted positions


def test_write_trait_plots__png_files_and_no_temporary_files(tmp_path):
    result, trait = _result()
    paths = write_trait_plots(result, trait, tmp_path / "out")
    assert [p.name for p in paths] == ["out.height.manhattan.png", "out.height.qq.png"]
    assert all(_is_png(p) for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    assert write_trait_plots(result, "height", tmp_path / "by_name") == [
        tmp_path / "by_name.height.manhattan.png",
        tmp_path / "by_name.height.qq.png",
    ]


def test_write_trait_plots__raise_on_unknown_trait(tmp_path):
    result, _ = _result(m=31)
    with pytest.raises(KeyError, match="no trait 'weight'.*height"):
        write_trait_plots(result, "weight", tmp_path / "out")


def test_write_plots__all_na_and_plain_p(tmp_path):
    chrom, pos = np.array(["1", "1", "2"]), np.array([1, 2, 3])
    nan = np.full(3, np.nan)
    assert _is_png(write_manhattan(tmp_path / "m.png", chrom, pos, nan, "all NA"))
    assert np.isnan(write_qq(tmp_path / "q.png", nan, "all NA"))
    p = np.array([0.5, np.nan, 0.0])  # P = 0 without log10 P: drawn at the smallest float
    assert _is_png(write_manhattan(tmp_path / "m2.png", chrom, pos, p, "plain"))
    assert write_qq(tmp_path / "q2.png", p, "plain") == lambda_gc(p)
    assert not list(tmp_path.glob("*.tmp*"))
