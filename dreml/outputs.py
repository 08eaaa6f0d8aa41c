"""Writing a fit's results: GCTA-style .hsq, the full .json, the .history.tsv, a plot, a table,
GCTA's .indi.blp and .snp.blp, and the fit state (.fit.npz) that `dreml predict` reads; and
the same tables as pandas DataFrames for Python users (`variance_components`,
`fixed_effects`, `history`, and `gwas_table` for an association result).

The text writers take the *fit report*: the JSON-serialisable dictionary
`FitResult.to_dict()` (keys documented in docs/cli.md); an undefined number (a NaN SE) is
`NA` in the text files, `null` in the JSON and NaN in a DataFrame. The .blp writers take the
`FitState`. Files are written to a temporary name and renamed, so an interrupted run never
leaves a file that looks complete. Every JSON report (`write_json`, for every subcommand)
starts with the run's `dreml_version`, `argv`, `started` and `finished` (`dreml.runlog`).
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dreml import runlog
from dreml.fit_result import STATE_SUFFIX, FitResult, FitState

if TYPE_CHECKING:  # dreml.gwas writes its files with this module's writers
    from dreml.gwas import MarginalResult, MixedResult, MixedTraitResult, TraitResult


def atomic_write_text(path: str | Path, text: str, *, gz: bool = False) -> None:
    """Write `text` to `path` (gzip-compressed with `gz`) through a temporary sibling and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if gz:
        with gzip.open(tmp, "wt") as handle:
            handle.write(text)
    else:
        tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(x: float | None, spec: str = ".6g") -> str:
    return "NA" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null: JSON has no NaN, and strict readers (jq, JavaScript) reject it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def variance_rows(report: dict) -> list[tuple[str, float | None, float | None]]:
    """The .hsq's (Source, Variance, SE) rows in GCTA's order and names: V(G) (one component)
    or V(G1)..V(Gk), V(e), Vp, V(G..)/Vp, with several components Sum of V(G)/Vp; with a
    liability scale (`FitResult.liability`) V(G..)/Vp_L and Sum of V(G)_L/Vp."""
    comps = report["components"]
    labels = ["V(G)"] if len(comps) == 1 else [f"V(G{g + 1})" for g in range(len(comps))]
    rows = [(label, c["variance"], c["se"]) for label, c in zip(labels, comps)]
    rows.append(("V(e)", report["residual_variance"], report["residual_se"]))
    rows.append(("Vp", report["vp"], report["vp_se"]))
    rows += [(f"{label}/Vp", c["h2"], c["h2_se"]) for label, c in zip(labels, comps)]
    several = len(comps) > 1
    if several:
        rows.append(("Sum of V(G)/Vp", report["h2_total"], report["h2_total_se"]))
    if report.get("prevalence") is not None:
        rows += [(f"{label}/Vp_L", c["h2_liability"], c["h2_liability_se"]) for label, c in zip(labels, comps)]
        if several:
            rows.append(("Sum of V(G)_L/Vp", report["h2_total_liability"], report["h2_total_liability_se"]))
    return rows


def hsq_text(report: dict, *, fixed_effects: bool = False) -> str:
    """GCTA's .hsq layout: the `variance_rows` (a blank line before each Sum row; before the
    first liability-scale row GCTA's two lines naming the case fraction and the prevalence),
    logL, [logL0, LRT, df, Pval], n, [blank line, Fix_eff SE rows].

    Numbers as GCTA prints them, fixed-point with 6 decimals (logL, logL0 and LRT with 3, Pval
    in scientific notation with 4, fixed effects with 6 significant digits): a component at
    the boundary reads 0.000000, never 1e-09, for parsers that expect plain decimals.
    """
    lines = ["Source\tVariance\tSE"]
    preamble = (
        []
        if report.get("prevalence") is None
        else [
            "The estimate of variance explained on the observed scale is transformed to that on the underlying scale:",
            f"(Proportion of cases in the sample = {report['case_fraction']:.6f}; "
            f"User-specified disease prevalence = {report['prevalence']:.6f})",
        ]
    )
    for label, value, se in variance_rows(report):
        if label.startswith("Sum of"):
            lines.append("")
        if label.endswith("/Vp_L"):
            lines += preamble
            preamble = []  # once, before the first
        lines.append(f"{label}\t{_fmt(value, '.6f')}\t{_fmt(se, '.6f')}")
    lines.append(f"logL\t{_fmt(report['loglik'], '.3f')}")
    lrt = report.get("lrt")
    if lrt is not None:
        lines += [
            f"logL0\t{_fmt(lrt['loglik0'], '.3f')}",
            f"LRT\t{_fmt(lrt['lrt'], '.3f')}",
            f"df\t{lrt['df']}",
            f"Pval\t{_fmt(lrt['pvalue'], '.4e')}",
        ]
    lines.append(f"n\t{report['n_samples']}")
    if fixed_effects:
        lines += ["", "Fix_eff\tSE"] + [f"{_fmt(e['estimate'])}\t{_fmt(e['se'])}" for e in report["fixed_effects"]]
    return "\n".join(lines) + "\n"


def indi_blp_text(state: FitState) -> str:
    """GCTA's .indi.blp (no header): FID, IID, then for each component and the residual the
    intermediate variable theta_i P y and the BLUP, u_g = theta_g K_g P y (residual:
    theta_e P y twice), tab-separated, 6 significant digits as GCTA."""
    theta = state.theta
    columns = []
    for g in range(state.n_components):
        columns += [theta[g] * state.Py, theta[g] * state.KPy[g]]
    columns += [theta[-1] * state.Py, theta[-1] * state.Py]
    values = np.column_stack(columns)
    return "".join(
        f"{fid}\t{iid}\t" + "\t".join(format(v, ".6g") for v in row) + "\n"
        for fid, iid, row in zip(state.sample_fid, state.sample_iid, values)
    )


def snp_blp_text(state: FitState) -> str:
    """GCTA's .snp.blp (no header): SNP, the counted allele (ALT), then the effect per copy of
    it on the raw dosage scale for each component, and with several components their sum
    (`plink2 --score PREFIX.snp.blp 1 2 3` scores component 1; column 3 + G is the total).
    A variant in several components has one row."""
    variants = state.variants
    key = variants.store.astype(np.int64) << 40 | variants.index.astype(np.int64)  # one per (store, variant)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    table = np.zeros((len(first), state.n_components))
    np.add.at(table, (inverse, variants.component), state.effect_per_allele())
    order = np.argsort(first)  # rows in the order of first appearance
    table, first = table[order], first[order]
    if state.n_components > 1:
        table = np.column_stack([table, table.sum(axis=1)])
    lines = [f"{variants.id[j]}\t{variants.alt[j]}\t" + "\t".join(format(v, ".6g") for v in row) for j, row in zip(first, table)]
    return "\n".join(lines) + "\n"


def history_rows(report: dict) -> tuple[list[str], list[list]]:
    """The history as (column names, one row per iteration); theta expanded to one column per
    variance component (`theta_NAME`, `theta_residual`).

    The other columns are every scalar key of any row, in order of first appearance (rows
    differ: d_theta and the decrement first appear at iteration 1, loglik in the last row);
    None where a row lacks one.
    """
    names = [c["name"] for c in report["components"]] + ["residual"]
    history = report["history"]
    scalar_keys = list(
        dict.fromkeys(
            k for row in history for k, v in row.items() if k not in ("iteration", "theta") and not isinstance(v, (list, dict))
        )
    )
    columns = ["iteration"] + [f"theta_{n}" for n in names] + scalar_keys
    rows = [
        [row.get("iteration", i), *(float(t) for t in row["theta"]), *(row.get(k) for k in scalar_keys)]
        for i, row in enumerate(history)
    ]
    return columns, rows


def history_tsv_text(report: dict) -> str:
    """`history_rows` tab-separated, `NA` where a row lacks a value."""
    columns, rows = history_rows(report)
    lines = ["\t".join(columns)]
    lines += ["\t".join(_fmt(v) if v is None or isinstance(v, float) else str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def summary_table(report: dict) -> str:
    """The table `dreml fit` prints."""
    width = max([len(c["name"]) for c in report["components"]] + [8])
    head = f"{'component':<{width}}  {'m':>8}  {'variance':>10}  {'SE':>9}  {'h2':>7}  {'SE':>7}"
    lines = [head, "-" * len(head)]
    for c in report["components"]:
        flag = "  (boundary)" if c.get("at_boundary") else ""
        lines.append(
            f"{c['name']:<{width}}  {c['m']:>8}  {c['variance']:>10.5f}  {c['se']:>9.5f}  "
            f"{c['h2']:>7.4f}  {c['h2_se']:>7.4f}{flag}"
        )
    lines.append(f"{'residual':<{width}}  {'':>8}  {report['residual_variance']:>10.5f}  {report['residual_se']:>9.5f}")
    lines.append("-" * len(head))
    lines.append(
        f"total h2 {report['h2_total']:.4f} (SE {report['h2_total_se']:.4f}, Monte Carlo SE "
        f"{report['h2_total_mc_se']:.4f})   logL {report['loglik']:.3f}"
    )
    if report.get("prevalence") is not None:
        lines.append(
            f"liability scale: total h2 {report['h2_total_liability']:.4f} (SE {report['h2_total_liability_se']:.4f}) "
            f"at prevalence {report['prevalence']:g}, case fraction {report['case_fraction']:.4f}"
        )
    lrt = report.get("lrt")
    if lrt is not None:
        lines.append(
            f"LRT {lrt['lrt']:.3f} (Monte Carlo SE {lrt['lrt_se']:.3f}) for dropping {', '.join(lrt['dropped'])}: "
            f"df {lrt['df']}, P {lrt['pvalue']:.4g}"
        )
    lines.append(
        f"n {report['n_samples']}   method {report['method']}   iterations {report['iterations']}   passes {report['passes']}   "
        f"time {report['timings']['end_to_end']:.1f} s   converged {report['converged']}   seed {report['seed']}"
    )
    return "\n".join(lines)


def write_plot(report: dict, path: str | Path) -> None:
    """Convergence figure: each variance component and the Newton decrement (the stopping
    measure, log scale, with the tolerance it was tested against) per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    history = report["history"]
    theta = np.array([row["theta"] for row in history])
    names = [c["name"] for c in report["components"]] + ["residual"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for j, name in enumerate(names):
        ax1.plot(np.arange(len(theta)), theta[:, j], marker="o", label=name)
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("variance")
    ax1.legend()
    steps = [(i, row["decrement"]) for i, row in enumerate(history) if row.get("decrement")]
    if steps:
        ax2.semilogy(*zip(*steps), marker="o", label="s' AI^-1 s")
        tol = [max(report["config"]["tol_decrement"], history[i].get("decrement_floor", 0.0)) for i, _ in steps]
        ax2.semilogy([i for i, _ in steps], tol, linestyle="--", color="grey", label="stopping threshold")
        ax2.legend()
    ax2.set_xlabel("iteration")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_ylabel("Newton decrement")
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_json(report: dict, path: str | Path) -> None:
    """Strict JSON (NaN as null), through a temporary name, starting with the run's metadata:
    `dreml_version`, `argv`, `started` (of the command in progress, `dreml.runlog`; `argv`
    and `started` are null when the report is written from Python outside a command) and
    `finished` (now)."""
    metadata = runlog.current().metadata()
    document = {**metadata, **{k: v for k, v in report.items() if k not in metadata}}
    atomic_write_text(path, json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n")


def write_outputs(
    result: FitResult,
    prefix: str | Path,
    *,
    plot: bool = False,
    reml_est_fix: bool = False,
    reml_pred_rand: bool = False,
    blup_snp: bool = False,
) -> list[Path]:
    """Write PREFIX.hsq, .json, .history.tsv, .fit.npz (the state), and on request .png,
    .indi.blp (`reml_pred_rand`), .snp.blp (`blup_snp`); fixed effects join the .hsq with
    `reml_est_fix` (they are always in the .json). Returns the paths."""
    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    report = result.to_dict()
    paths = [Path(prefix + ".hsq"), Path(prefix + ".json"), Path(prefix + ".history.tsv")]
    atomic_write_text(paths[0], hsq_text(report, fixed_effects=reml_est_fix))
    write_json(report, paths[1])
    atomic_write_text(paths[2], history_tsv_text(report))
    if result.state is not None:
        paths.append(result.state.save(prefix + STATE_SUFFIX))
        if reml_pred_rand:
            paths.append(Path(prefix + ".indi.blp"))
            atomic_write_text(paths[-1], indi_blp_text(result.state))
        if blup_snp:
            paths.append(Path(prefix + ".snp.blp"))
            atomic_write_text(paths[-1], snp_blp_text(result.state))
    if plot:
        paths.append(Path(prefix + ".png"))
        write_plot(report, paths[-1])
    return paths


# ----------------------------------------------------------------------------- DataFrames


def variance_components(result: FitResult) -> pd.DataFrame:
    """The .hsq's variance table: columns Source, Variance, SE; rows as `variance_rows`."""
    rows = variance_rows(result.to_dict())
    return pd.DataFrame(rows, columns=["Source", "Variance", "SE"]).astype({"Variance": float, "SE": float})


def fixed_effects(result: FitResult) -> pd.DataFrame:
    """The GLS fixed effects at the estimates: columns Source (the column of X: intercept
    first, then the covariates), Estimate, SE."""
    return pd.DataFrame([(e.name, e.estimate, e.se) for e in result.fixed_effects], columns=["Source", "Estimate", "SE"])


def history(result: FitResult) -> pd.DataFrame:
    """The .history.tsv as a DataFrame: one row per iteration, columns as `history_rows`."""
    columns, rows = history_rows(result.to_dict())
    return pd.DataFrame(rows, columns=columns)


def gwas_table(result: MarginalResult | MixedResult, trait: TraitResult | MixedTraitResult) -> pd.DataFrame:
    """One trait's association statistics, one row per variant as in its .glm.linear or
    .glm.mixed file: CHROM, POS, ID, REF, ALT (= A1, the tested allele), A1_FREQ, OBS_CT,
    BETA, SE, T_STAT, P, LOG10_P (exact where P underflows to 0), and CHISQ for the mixed
    test; NaN where a variant was not tested."""
    # the marginal test counts allele frequency and samples per trait, the mixed test once
    per_variant: Any = trait if hasattr(trait, "a1_freq") else result  # either carries a1_freq and obs_ct
    table = {
        "CHROM": result.chrom,
        "POS": result.pos,
        "ID": result.variant_id,
        "REF": result.ref,
        "ALT": result.alt,
        "A1_FREQ": per_variant.a1_freq,
        "OBS_CT": per_variant.obs_ct,
        "BETA": trait.beta,
        "SE": trait.se,
        "T_STAT": trait.t_stat,
        "P": trait.p,
        "LOG10_P": trait.log10_p,
    }
    if hasattr(trait, "chisq"):
        table["CHISQ"] = trait.chisq
    return pd.DataFrame(table)
