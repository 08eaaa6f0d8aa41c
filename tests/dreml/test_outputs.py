"""Fit output files: GCTA .hsq layout (liability-scale rows too), JSON round trip and run
metadata, history TSV, plot, atomic writes; the DataFrames against the files."""

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pytest

from dreml import runlog
from dreml._version import __version__
from dreml.fit_result import FitResult
from dreml.gwas import MarginalResult, MixedConfig, MixedResult, MixedTraitResult, TraitResult
from dreml.liability import LiabilityScale
from dreml.outputs import (
    fixed_effects,
    gwas_table,
    history,
    history_tsv_text,
    hsq_text,
    summary_table,
    variance_components,
    write_json,
    write_outputs,
)

METADATA = ("dreml_version", "argv", "started", "finished")


def make_report(n_components: int) -> dict:
    """A complete report (every `FitResult` field) with round numbers."""
    comps = [
        {
            "name": f"c{g}",
            "m": 100 * (g + 1),
            "variance": 0.1 * (g + 1),
            "se": 0.01 * (g + 1),
            "h2": 0.1 * (g + 1),
            "h2_se": 0.02,
            "h2_mc_se": 0.001,
            "at_boundary": g == 1,
        }
        for g in range(n_components)
    ]
    theta = [c["variance"] for c in comps] + [0.5]
    return {
        "components": comps,
        "residual_variance": 0.5,
        "residual_se": 0.03,
        "vp": sum(theta),
        "vp_se": 0.04,
        "h2_total": 0.3,
        "h2_total_se": 0.05,
        "h2_total_mc_se": 0.004,
        "loglik": -1234.56789,
        "loglik_se": 0.1,
        "n_samples": 2000,
        "n_covariates": 2,
        "method": "randomised",
        "method_reason": "requested",
        "config": {"tol_decrement": 1e-4},
        "decrement": 1e-5,
        "passes_by_kind": {"score": 7},
        "status": "converged",
        "covariance": [[0.0] * (n_components + 1)] * (n_components + 1),
        "score": [0.0] * (n_components + 1),
        "fixed_effects": [
            {"name": "intercept", "estimate": 1.5, "se": 0.25},
            {"name": "age", "estimate": -0.0123456789, "se": 0.001},
        ],
        "lrt": None,
        "samples": {"samples_used": 2000},
        "variant_filter": "",
        "inputs": {},
        "iterations": 2,
        "passes": 7,
        "converged": True,
        "seed": 11,
        "timings": {"end_to_end": 1.5},
        "history": [
            {"iteration": 0, "theta": theta, "loglik": -1300.0, "score_norm": 3.0, "pcg_iterations": 12},
            {
                "iteration": 1,
                "theta": theta,
                "loglik": -1234.56789,
                "score_norm": 1e-7,
                "pcg_iterations": 10,
                "decrement": 65.43211,
                "decrement_floor": 1e-3,
            },
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
        "Source",
        "V(G1)",
        "V(G2)",
        "V(G3)",
        "V(e)",
        "Vp",
        "V(G1)/Vp",
        "V(G2)/Vp",
        "V(G3)/Vp",
        "",
        "Sum of V(G)/Vp",
        "logL",
        "n",
    ]


def test_hsq_text__lrt_and_fixed_effects_as_gcta():
    report = make_report(1)
    report["lrt"] = {
        "dropped": ["c0"],
        "loglik0": -1240.0,
        "loglik0_se": 0.0,
        "lrt": 10.86422,
        "lrt_se": 0.2,
        "df": 1,
        "pvalue": 4.9e-4,
    }
    lines = hsq_text(report, fixed_effects=True).splitlines()
    assert lines[5:] == [
        "logL\t-1234.568",
        "logL0\t-1240.000",
        "LRT\t10.864",
        "df\t1",
        "Pval\t4.9000e-04",
        "n\t2000",
        "",
        "Fix_eff\tSE",
        "1.5\t0.25",
        "-0.0123457\t0.001",
    ]
    assert "Fix_eff" not in hsq_text(report)
    assert "LRT 10.864 (Monte Carlo SE 0.200) for dropping c0: df 1, P 0.00049" in summary_table(report)


def test_fit_result__dict_round_trip():
    report = make_report(2)
    assert FitResult.from_dict(report).to_dict() == report


def test_history_tsv_text__one_column_per_variance():
    lines = history_tsv_text(make_report(2)).splitlines()
    assert lines[0].split("\t") == [
        "iteration",
        "theta_c0",
        "theta_c1",
        "theta_residual",
        "loglik",
        "score_norm",
        "pcg_iterations",
        "decrement",
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
    saved = json.loads((tmp_path / "sub" / "fit.json").read_text())
    assert list(saved)[:4] == list(METADATA) and {k: saved[k] for k in report} == report
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


def test_write_json__run_metadata_from_python_and_from_a_command(tmp_path):
    # from Python, outside a command: no command line and no start to record
    write_json({"x": 1, "argv": "the report's own"}, tmp_path / "api.json")
    saved = json.loads((tmp_path / "api.json").read_text())
    assert list(saved) == [*METADATA, "x"]
    assert saved["dreml_version"] == __version__ and saved["argv"] is None and saved["started"] is None
    assert runlog.now()[:10] == saved["finished"][:10]
    with runlog.recording(["dreml", "fit", "--out", "x"], None) as run:
        write_json({"x": 1}, tmp_path / "cli.json")
    saved = json.loads((tmp_path / "cli.json").read_text())
    assert saved["argv"] == ["dreml", "fit", "--out", "x"] and saved["started"] == run.started
    assert saved["started"] <= saved["finished"]  # same zone, ISO 8601: text order is time order


def _with_liability(report: dict, prevalence: float = 0.1, case_fraction: float = 0.5) -> dict:
    result = FitResult.from_dict(report)
    return dataclasses.replace(result, liability=LiabilityScale(prevalence, case_fraction)).to_dict()


def test_hsq_text__liability_rows_as_gcta_one_component():
    report = _with_liability(make_report(1))
    factor = LiabilityScale(0.1, 0.5).factor
    lines = hsq_text(report).splitlines()
    assert lines[4:8] == [
        "V(G)/Vp\t0.100000\t0.020000",
        "The estimate of variance explained on the observed scale is transformed to that on the underlying scale:",
        "(Proportion of cases in the sample = 0.500000; User-specified disease prevalence = 0.100000)",
        f"V(G)/Vp_L\t{0.1 * factor:.6f}\t{0.02 * factor:.6f}",
    ]
    assert lines[8].startswith("logL\t")


def test_hsq_text__liability_rows_as_gcta_two_components():
    report = _with_liability(make_report(2))
    rows = [line.split("\t")[0] for line in hsq_text(report).splitlines()]
    assert rows[5:] == [
        "V(G1)/Vp",
        "V(G2)/Vp",
        "",
        "Sum of V(G)/Vp",
        rows[9],
        rows[10],
        "V(G1)/Vp_L",
        "V(G2)/Vp_L",
        "",
        "Sum of V(G)_L/Vp",
        "logL",
        "n",
    ]
    assert rows[9].startswith("The estimate") and rows[10].startswith("(Proportion of cases")


def test_fit_result__liability_in_the_report_and_round_trip():
    report = _with_liability(make_report(2), prevalence=0.01, case_fraction=0.3)
    factor = LiabilityScale(0.01, 0.3).factor
    assert report["prevalence"] == 0.01 and report["case_fraction"] == 0.3
    assert [c["h2_liability"] for c in report["components"]] == pytest.approx([0.1 * factor, 0.2 * factor])
    assert [c["h2_liability_se"] for c in report["components"]] == pytest.approx([0.02 * factor] * 2)
    assert report["h2_total_liability"] == pytest.approx(0.3 * factor)
    assert report["h2_total_liability_se"] == pytest.approx(0.05 * factor)
    assert FitResult.from_dict(report).to_dict() == report
    assert "liability scale: total h2" in summary_table(report)
    assert "prevalence" not in make_report(2) and "liability" not in summary_table(make_report(2))


@pytest.mark.parametrize("prevalence", [None, 0.05])
@pytest.mark.parametrize("n_components", [1, 3])
def test_variance_components__equals_the_hsq_rows(n_components, prevalence):
    report = make_report(n_components)
    report["components"][0]["se"] = float("nan")  # an undefined SE: NA in the .hsq, NaN here
    result = FitResult.from_dict(report)
    if prevalence is not None:
        result = dataclasses.replace(result, liability=LiabilityScale(prevalence, 0.4))
    frame = variance_components(result)
    hsq = pd.read_csv(
        io.StringIO(hsq_text(result.to_dict())), sep="\t", names=["Source", "Variance", "SE"], skiprows=1, na_values="NA"
    )
    hsq = hsq[hsq["Source"].str.startswith(("V", "Sum"))].reset_index(drop=True)  # the table rows
    assert list(frame["Source"]) == list(hsq["Source"])
    np.testing.assert_allclose(frame[["Variance", "SE"]].to_numpy(), hsq[["Variance", "SE"]].to_numpy(), atol=5e-7)
    assert np.isnan(frame["SE"][0]) and frame["Variance"].dtype == np.float64


def test_fixed_effects_and_history__equal_the_report_and_tsv():
    result = FitResult.from_dict(make_report(2))
    effects = fixed_effects(result)
    assert list(effects.columns) == ["Source", "Estimate", "SE"]
    assert effects.to_dict("list") == {"Source": ["intercept", "age"], "Estimate": [1.5, -0.0123456789], "SE": [0.25, 0.001]}
    frame = history(result)
    tsv = pd.read_csv(io.StringIO(history_tsv_text(result.to_dict())), sep="\t", na_values="NA")
    assert list(frame.columns) == list(tsv.columns)
    pd.testing.assert_frame_equal(frame, tsv, check_dtype=False, rtol=1e-5)
    assert np.isnan(frame["decrement"][0])


def _marginal() -> MarginalResult:
    rng = np.random.default_rng(1)
    m = 5
    trait = TraitResult(
        name="height",
        n=90,
        covariate_names=("intercept",),
        beta=rng.normal(size=m),
        se=np.full(m, 0.1),
        t_stat=rng.normal(size=m),
        p=np.array([0.5, 0.0, 1e-8, np.nan, 0.2]),
        log10_p=np.array([np.log10(0.5), -400.0, -8.0, np.nan, np.log10(0.2)]),
        a1_freq=np.full(m, 0.3),
        obs_ct=np.arange(90, 90 + m),
        skipped={},
        lambda_gc=1.0,
    )
    return MarginalResult(
        missing="complete-case",
        chrom=np.array(["1"] * m),
        pos=np.arange(1, m + 1),
        variant_id=np.array([f"rs{j}" for j in range(m)]),
        ref=np.array(["A"] * m),
        alt=np.array(["G"] * m),
        traits=(trait,),
        passes=1,
        timings={},
        n_driver_variants=0,
    )


def test_gwas_table__marginal_and_mixed_columns():
    result = _marginal()
    trait = result.traits[0]
    table = gwas_table(result, trait)
    assert list(table.columns) == [
        "CHROM",
        "POS",
        "ID",
        "REF",
        "ALT",
        "A1_FREQ",
        "OBS_CT",
        "BETA",
        "SE",
        "T_STAT",
        "P",
        "LOG10_P",
    ]
    assert list(table["ID"]) == list(result.variant_id) and list(table["OBS_CT"]) == list(trait.obs_ct)
    np.testing.assert_array_equal(table["BETA"], trait.beta)
    assert table["P"][1] == 0.0 and table["LOG10_P"][1] == -400.0  # below the float range: exact on the log scale
    mixed_trait = MixedTraitResult(
        name="height",
        n=90,
        beta=trait.beta,
        se=trait.se,
        t_stat=trait.t_stat,
        chisq=trait.t_stat**2,
        p=trait.p,
        log10_p=trait.log10_p,
        lambda_gc=1.0,
    )
    mixed = MixedResult(
        chrom=result.chrom,
        pos=result.pos,
        variant_id=result.variant_id,
        ref=result.ref,
        alt=result.alt,
        a1_freq=np.full(5, 0.25),
        obs_ct=np.full(5, 90),
        traits=(mixed_trait,),
        chromosomes=(),
        config=MixedConfig(),
        passes=1,
        timings={},
        n_collinear=0,
    )
    table = gwas_table(mixed, mixed_trait)
    assert list(table.columns)[-1] == "CHISQ" and list(table["A1_FREQ"]) == [0.25] * 5
    np.testing.assert_array_equal(table["CHISQ"], mixed_trait.chisq)
