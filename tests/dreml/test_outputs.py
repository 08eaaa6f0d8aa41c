"""Fit output files: GCTA .hsq layout, JSON round trip, history TSV, plot, atomic writes."""

import json

import pytest

from dreml.fit_result import FitResult
from dreml.outputs import hsq_text, history_tsv_text, summary_table, write_outputs


def make_report(n_components: int) -> dict:
    """A complete report (every `FitResult` field) with round numbers."""
    comps = [
        {"name": f"c{g}", "m": 100 * (g + 1), "variance": 0.1 * (g + 1), "se": 0.01 * (g + 1),
         "h2": 0.1 * (g + 1), "h2_se": 0.02, "h2_mc_se": 0.001, "at_boundary": g == 1}
        for g in range(n_components)
    ]
    theta = [c["variance"] for c in comps] + [0.5]
    return {
        "components": comps, "residual_variance": 0.5, "residual_se": 0.03, "vp": sum(theta),
        "vp_se": 0.04, "h2_total": 0.3, "h2_total_se": 0.05, "h2_total_mc_se": 0.004, "loglik": -1234.56789,
        "loglik_se": 0.1, "n_samples": 2000, "n_covariates": 2, "method": "randomised", "method_reason": "requested",
        "config": {"tol_decrement": 1e-4}, "decrement": 1e-5, "passes_by_kind": {"score": 7}, "status": "converged",
        "covariance": [[0.0] * (n_components + 1)] * (n_components + 1), "score": [0.0] * (n_components + 1),
        "fixed_effects": [{"name": "intercept", "estimate": 1.5, "se": 0.25}, {"name": "age", "estimate": -0.0123456789, "se": 0.001}],
        "lrt": None, "samples": {"samples_used": 2000}, "variant_filter": "", "inputs": {},
        "iterations": 2, "passes": 7, "converged": True, "seed": 11, "timings": {"end_to_end": 1.5},
        "history": [
            {"iteration": 0, "theta": theta, "loglik": -1300.0, "score_norm": 3.0, "pcg_iterations": 12},
            {"iteration": 1, "theta": theta, "loglik": -1234.56789, "score_norm": 1e-7, "pcg_iterations": 10,
             "decrement": 65.43211, "decrement_floor": 1e-3},
        ],
    }


def test_hsq_text__gcta_layout_one_component():
    lines = hsq_text(make_report(1)).splitlines()
    assert [line.split("\t")[0] for line in lines] == ["Source", "V(G)", "V(e)", "Vp", "V(G)/Vp", "logL", "n"]
    assert lines[1] == "V(G)\t0.100000\t0.010000"
    assert lines[-2:] == ["logL\t-1234.568", "n\t2000"]


def test_hsq_text__gcta_layout_three_components():
    rows = [line.split("\t")[0] for line in hsq_text(make_report(3)).splitlines()]
    assert rows == [
        "Source", "V(G1)", "V(G2)", "V(G3)", "V(e)", "Vp", "V(G1)/Vp", "V(G2)/Vp", "V(G3)/Vp",
        "", "Sum of V(G)/Vp", "logL", "n",
    ]


def test_hsq_text__lrt_and_fixed_effects_as_gcta():
    report = make_report(1)
    report["lrt"] = {"dropped": ["c0"], "loglik0": -1240.0, "loglik0_se": 0.0, "lrt": 10.86422, "lrt_se": 0.2, "df": 1,
                     "pvalue": 4.9e-4}
    lines = hsq_text(report, fixed_effects=True).splitlines()
    assert lines[5:] == ["logL\t-1234.568", "logL0\t-1240.000", "LRT\t10.864", "df\t1", "Pval\t4.9000e-04", "n\t2000",
                         "", "Fix_eff\tSE", "1.5\t0.25", "-0.0123457\t0.001"]
    assert "Fix_eff" not in hsq_text(report)
    assert "LRT 10.864 (Monte Carlo SE 0.200) for dropping c0: df 1, P 0.00049" in summary_table(report)


def test_fit_result__dict_round_trip():
    report = make_report(2)
    assert FitResult.from_dict(report).to_dict() == report


def test_history_tsv_text__one_column_per_variance():
    lines = history_tsv_text(make_report(2)).splitlines()
    assert lines[0].split("\t") == [
        "iteration", "theta_c0", "theta_c1", "theta_residual", "loglik", "score_norm", "pcg_iterations", "decrement",
        "decrement_floor",
    ]
    assert len(lines) == 3 and lines[2].split("\t")[:4] == ["1", "0.1", "0.2", "0.5"]
    # a key first recorded at iteration 1 still gets its column, NA where a row lacks it
    assert lines[1].split("\t")[-2] == "NA" and lines[2].split("\t")[-2] == "65.4321"


def test_summary_table__flags_boundary():
    table = summary_table(make_report(2))
    assert "c1" in table and "(boundary)" in table.splitlines()[3]
    assert "total h2 0.3000 (SE 0.0500, Monte Carlo SE 0.0040)" in table and "method randomised" in table


def test_write_outputs__files_and_no_temporaries(tmp_path):
    report = make_report(2)
    paths = write_outputs(FitResult.from_dict(report), tmp_path / "sub" / "fit", plot=True)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == sorted(p.name for p in paths)
    assert json.loads((tmp_path / "sub" / "fit.json").read_text()) == report
    png = (tmp_path / "sub" / "fit.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_outputs__nan_written_as_na_and_null(tmp_path):
    report = make_report(1)
    report["components"][0]["se"] = float("nan")
    report["loglik"] = float("nan")
    write_outputs(FitResult.from_dict(report), tmp_path / "fit")
    hsq = (tmp_path / "fit.hsq").read_text().splitlines()
    assert hsq[1] == "V(G)\t0.100000\tNA" and hsq[-2] == "logL\tNA"
    # strict JSON: a reader that rejects NaN (jq, JavaScript) must parse the file
    text = (tmp_path / "fit.json").read_text()
    saved = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert saved["components"][0]["se"] is None and saved["loglik"] is None


def test_hsq_text__fixed_point_at_boundary():
    # GCTA prints fixed-point; an exponent (1e-09) would break parsers expecting decimals
    report = make_report(1)
    report["components"][0]["variance"] = 1e-9
    assert hsq_text(report).splitlines()[1] == "V(G)\t0.000000\t0.010000"


@pytest.mark.parametrize("n_components", [1, 2])
def test_hsq_text__values_parse_back(n_components):
    report = make_report(n_components)
    table = dict(line.split("\t")[:2] for line in hsq_text(report).splitlines()[1:] if line)
    assert float(table["V(e)"]) == pytest.approx(report["residual_variance"])
    assert float(table["Vp"]) == pytest.approx(report["vp"])
    assert int(table["n"]) == report["n_samples"]
