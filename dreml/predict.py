"""`dreml.predict`: polygenic scores of new samples from a saved fit, one pass on a cluster.

A fit (`dreml.fit_result.FitState`) holds, per (component, variant) row j of its variant
table, the standardised-scale SNP BLUP b_j = theta_g z_j^T P y / m_g and the ALT frequency
p_j that standardised it. The score of a sample i of another store is

    u_ig = sum_{j in g} z_ij b_j,   z_ij = (x_ij - 2 p_j) / sqrt(2 p_j (1 - p_j)),  missing -> 0,

with x_ij its ALT dosage and p_j the TRAINING frequency (so a new sample is centred where the
training samples were, and a missing call counts as the training mean). On the training
store this is exactly the fit's BLUP: Z_g b_g = theta_g Z_g Z_g^T P y / m_g = theta_g K_g P y.
Scores are in phenotype units; total_i = sum_g u_ig (the prediction of y_i is x_i^T beta + total_i).

Matching a training row to the new store (`match_variants`), on contig NAME, position and both
alleles (upper-cased); each row gets exactly one status, tested in this order:

    missing      no new-store variant at that contig and position carries the training pair
                 {REF, ALT} (`other_alleles` marks those with a variant there with other alleles:
                 a strand flip, another allele of a multi-allelic site, or another build)
    duplicate    several new-store variants carry the pair, or several different training
                 variants of one training store claim the same new-store variant
    ambiguous    the pair is A/T or C/G (either order): the same alleles on the other strand
                 are the swapped pair, so a swap cannot be told from a strand flip; excluded
                 unless `keep_ambiguous` (the caller vouches that both stores report alleles on
                 one strand, e.g. the same genotyping pipeline)
    matched      same REF and ALT: sign +1
    swapped      new REF = training ALT and new ALT = training REF: sign -1

Swapped variants. The new store counts the training REF: its dosage is x' = 2 - x. Then

    z = (x - 2p) / sqrt(2p(1-p)) = -((x' - 2(1-p)) / sqrt(2(1-p)p)) = -z'(x'; 1 - p),

i.e. the training z is minus the new store's dosage standardised with frequency 1 - p (and a
missing call is 0 either way). So the new store's variant is standardised with 1 - p_j and its
effect enters as -b_j; the operator needs no special case.

The pass: a `GenotypeOperator` on the new store whose components are, per training component,
its used new-store variants (sorted), with explicit frequencies (p_j or 1 - p_j at used
variants; 0.5, unused, elsewhere), no filters; `z_matmat` with the signed effects in the same
order. A fit over several stores gets one copy of the new store per training store (each copy
with its store's frequencies). A component with no used variant is left out and scores 0.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np
from distributed import Client

from dreml.components import Components
from dreml.errors import InputError
from dreml.fit_result import FitState, VariantTable
from dreml.operators import GenotypeOperator
from dreml.store import Store, open_store

logger = logging.getLogger(__name__)

_AMBIGUOUS_PAIRS = {"AT", "TA", "CG", "GC"}
_POSITION_BITS = 40  # positions below 2^40 bp; the contig code sits above them


class MatchStatus(IntEnum):
    """What became of one training variant row (tested as the module docstring lists them)."""

    MATCHED = 0
    SWAPPED = 1
    AMBIGUOUS = 2
    MISSING = 3
    DUPLICATE = 4


STATUS_NAMES = tuple(s.name.lower() for s in MatchStatus)


@dataclass(frozen=True)
class Match:
    """Training variant rows matched to a new store (module docstring).

    Fields (shape (R,), one per row of the fit's `VariantTable`):
        status: `MatchStatus` codes.
        new_index: the matched variant's index in the new store; -1 where not used.
        sign: +1 (matched), -1 (swapped), 0 (not used).
        other_alleles: missing rows with a new-store variant at that position with other alleles.
    And: component (g of each row), names (component names), keep_ambiguous (the setting),
    ambiguous_kept (A/T or C/G rows used because of it).
    """

    status: np.ndarray
    new_index: np.ndarray
    sign: np.ndarray
    other_alleles: np.ndarray
    component: np.ndarray
    names: tuple[str, ...]
    keep_ambiguous: bool = False
    ambiguous_kept: int = 0

    @property
    def used(self) -> np.ndarray:
        """Rows that enter the scores, shape (R,)."""
        return self.sign != 0

    def _counts(self, rows: np.ndarray) -> dict[str, int]:
        codes = np.bincount(self.status[rows], minlength=len(MatchStatus))
        out = {name: int(c) for name, c in zip(STATUS_NAMES, codes)}
        out["used"] = out["matched"] + out["swapped"]
        out["missing_other_alleles"] = int(np.sum(self.other_alleles[rows]))
        out["rows"] = int(np.sum(rows))
        return out

    def counts(self) -> dict:
        """{"total": {...}, "components": [{"name", matched, swapped, ambiguous, missing,
        duplicate, used, missing_other_alleles, rows}, ...], "ambiguous_kept", "keep_ambiguous"}."""
        return {
            "total": self._counts(np.ones(len(self.status), dtype=bool)),
            "components": [{"name": name, **self._counts(self.component == g)} for g, name in enumerate(self.names)],
            "keep_ambiguous": self.keep_ambiguous,
            "ambiguous_kept": self.ambiguous_kept,
        }

    def table(self) -> str:
        """A fixed-width table, one line per component and a total (logged)."""
        counts = self.counts()
        keys = ("rows", "used", *STATUS_NAMES)
        width = max([len(n) for n in self.names] + [9])
        lines = [f"{'component':<{width}} " + " ".join(f"{k:>9}" for k in keys)]
        for row in counts["components"] + [{"name": "total", **counts["total"]}]:
            lines.append(f"{row['name']:<{width}} " + " ".join(f"{row[k]:>9}" for k in keys))
        return "\n".join(lines)


def _is_ambiguous(ref: np.ndarray, alt: np.ndarray) -> np.ndarray:
    return np.isin(np.strings.add(ref, alt), list(_AMBIGUOUS_PAIRS))


def match_variants(
    variants: VariantTable, store: Store, *, keep_ambiguous: bool = False, names: tuple[str, ...] | None = None
) -> Match:
    """Match the fit's variant rows to `store` by contig name, position and both alleles.

    Arguments:
        variants: the fit's `VariantTable` (`FitState.variants`).
        store: the new store.
        keep_ambiguous: use A/T and C/G variants too (module docstring).
        names: component names, for the counts (default "0", "1", ...).
    Returns:
        `Match`; no exception when nothing matches (`check_overlap` raises then).
    """
    R = len(variants.id)
    G = int(variants.component.max()) + 1 if R else 0
    names = tuple(names) if names is not None else tuple(str(g) for g in range(G))
    t_ref, t_alt = np.strings.upper(variants.ref.astype(str)), np.strings.upper(variants.alt.astype(str))
    n_ref = np.strings.upper(store.variant_allele[:, 0])
    n_alt = np.strings.upper(store.variant_allele[:, 1])
    # one integer key per (contig name, position), contig codes from the union of both vocabularies
    vocabulary, codes = np.unique(np.concatenate([variants.contig.astype(str), store.contig_id]), return_inverse=True)
    t_key = codes[:R].astype(np.int64) << _POSITION_BITS | variants.position.astype(np.int64)
    n_key = codes[R:][store.variant_contig].astype(np.int64) << _POSITION_BITS | store.variant_position.astype(np.int64)
    order = np.argsort(n_key, kind="stable")
    sorted_key = n_key[order]
    lo, hi = np.searchsorted(sorted_key, t_key, "left"), np.searchsorted(sorted_key, t_key, "right")
    at_position = hi - lo
    # every (training row, new variant at its position) pair
    pair_row = np.repeat(np.arange(R), at_position)
    offset = np.arange(len(pair_row)) - np.repeat(np.cumsum(at_position) - at_position, at_position)
    pair_new = order[np.repeat(lo, at_position) + offset]
    same = (n_ref[pair_new] == t_ref[pair_row]) & (n_alt[pair_new] == t_alt[pair_row])
    swapped = (n_ref[pair_new] == t_alt[pair_row]) & (n_alt[pair_new] == t_ref[pair_row]) & ~same
    compatible = same | swapped
    n_compatible = np.bincount(pair_row[compatible], minlength=R)

    status = np.full(R, MatchStatus.MISSING, dtype=np.int8)
    new_index = np.full(R, -1, dtype=np.int64)
    sign = np.zeros(R)
    single = compatible & (n_compatible[pair_row] == 1)
    new_index[pair_row[single]] = pair_new[single]
    sign[pair_row[single]] = np.where(same[single], 1.0, -1.0)
    status[n_compatible > 1] = MatchStatus.DUPLICATE
    # several different training variants of one store claiming one new-store variant
    found = np.flatnonzero(new_index >= 0)
    claim = variants.store[found].astype(np.int64) << _POSITION_BITS | new_index[found]
    claimant = np.unique(np.stack([claim, variants.index[found].astype(np.int64)], axis=1), axis=0)[:, 0]
    claims, per_claim = np.unique(claimant, return_counts=True)  # distinct training variants per claim
    shared = np.isin(claim, claims[per_claim > 1])
    status[found[shared]] = MatchStatus.DUPLICATE
    new_index[found[shared]], sign[found[shared]] = -1, 0.0
    found = found[~shared]
    ambiguous = _is_ambiguous(t_ref[found], t_alt[found])
    if keep_ambiguous:
        kept = int(np.sum(ambiguous))
    else:
        kept = 0
        status[found[ambiguous]] = MatchStatus.AMBIGUOUS
        new_index[found[ambiguous]], sign[found[ambiguous]] = -1, 0.0
        found = found[~ambiguous]
    status[found] = np.where(sign[found] > 0, MatchStatus.MATCHED, MatchStatus.SWAPPED)
    other = (status == MatchStatus.MISSING) & (at_position > 0)
    logger.debug("matched on %d contig name(s): %s", len(vocabulary), ", ".join(vocabulary[:10]))
    return Match(status, new_index, sign, other, variants.component.astype(np.int64), names, keep_ambiguous, kept)


def check_overlap(match: Match, variants: VariantTable, store: Store) -> None:
    """InputError, naming the store and the counts, when no training variant is usable."""
    if match.used.any():
        return
    c = match.counts()["total"]
    fit_contigs = ", ".join(sorted(set(map(str, variants.contig)))[:5])
    store_contigs = ", ".join(list(store.contig_id)[:5])
    advice = " (or pass --keep-ambiguous if both stores report alleles on one strand)" if c["ambiguous"] else ""
    raise InputError(
        f"{store.path}: none of the fit's {c['rows']} variant rows matches a variant of the store by contig, position "
        f"and alleles ({c['missing']} missing, {c['missing_other_alleles']} of them at a position with other alleles; "
        f"{c['ambiguous']} strand-ambiguous{advice}; {c['duplicate']} duplicate); check the genome build and contig "
        f"names (fit: {fit_contigs}; store: {store_contigs})"
    )


@dataclass(frozen=True)
class Prediction:
    """Scores of every sample of the new store (module docstring).

    Fields:
        names: training component names, shape (G,).
        sample_fid, sample_iid: the new store's samples, in its order, shape (n,).
        scores: u_ig per sample and component, shape (n, G) (0 for an unscored component).
        total: sum_g u_ig, shape (n,).
        counts: `Match.counts()`.
        unscored: components with no used variant.
        store: the new store's path.
        settings: worker_dtype, memory_budget, keep_ambiguous, and the fixed choices
            (no filters, missing calls at the training mean).
        passes: passes over the genotypes (1, or 0 when no component is scored).
        dashboard: the Dask dashboard link.
        timings: seconds: match, shard_load, score, end_to_end.
    """

    names: tuple[str, ...]
    sample_fid: np.ndarray
    sample_iid: np.ndarray
    scores: np.ndarray
    total: np.ndarray
    counts: dict
    unscored: tuple[str, ...]
    store: str
    settings: dict
    passes: int
    dashboard: str | None
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON report: everything but the per-sample arrays (they go to the .score.tsv)."""
        return {
            "store": self.store,
            "n_samples": int(len(self.sample_iid)),
            "components": list(self.names),
            "unscored_components": list(self.unscored),
            "counts": self.counts,
            "settings": self.settings,
            "scale": "phenotype units; genotypes standardised with the training ALT frequencies (missing calls at "
            "the training mean); on the training samples the fit's BLUP u_g = theta_g K_g P y",
            "passes": self.passes,
            "dashboard": self.dashboard,
            "timings": self.timings,
        }

    def score_tsv_text(self) -> str:
        """Header `FID IID <component names> total`, one tab-separated line per sample, 6 significant digits."""
        lines = ["\t".join(["FID", "IID", *self.names, "total"])]
        values = np.column_stack([self.scores, self.total])
        lines += [
            f"{fid}\t{iid}\t" + "\t".join(format(v, ".6g") for v in row)
            for fid, iid, row in zip(self.sample_fid, self.sample_iid, values)
        ]
        return "\n".join(lines) + "\n"


def predict(
    state: FitState,
    store: Store | str | Path,
    *,
    match: Match | None = None,
    client: Client | None = None,
    dtype: np.dtype | type | str = np.float32,
    memory_budget: int | str | None = None,
    keep_ambiguous: bool = False,
) -> Prediction:
    """Polygenic scores of every sample of `store` from a fit's SNP effects: one pass.

    Arguments:
        state: the fit (`FitState.load(PREFIX + ".fit.npz")`).
        store: the new store (path or `Store`).
        match: from `match_variants` (computed here when not given).
        client: Dask client (default: the current one or a local cluster owned by the operator).
        dtype: worker arithmetic, float32 (default) or float64; results are float64.
        memory_budget: per-worker bytes for the resident shards (`GenotypeOperator`).
        keep_ambiguous: use A/T and C/G variants (when `match` is computed here).
    Returns:
        `Prediction`. Raises InputError when no training variant is found in the store.
    """
    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else open_store(store)
    variants = state.variants
    names = tuple(state.names[:-1])
    if match is None:
        match = match_variants(variants, store, keep_ambiguous=keep_ambiguous, names=names)
    check_overlap(match, variants, store)
    logger.info("training variants matched to %s:\n%s", store.path, match.table())
    if match.ambiguous_kept:
        logger.warning(
            "%d strand-ambiguous (A/T, C/G) variant rows used as their alleles read (--keep-ambiguous)", match.ambiguous_kept
        )
    if not np.any(state.snp_effect):
        logger.warning(
            "the fit's SNP effects are all zero (every genetic variance at 0, or a fit without SNP effects): every score is 0"
        )
    t_match = time.perf_counter() - t0

    used = match.used
    effect = state.snp_effect * match.sign
    n_stores = int(variants.store.max()) + 1
    frequencies = [np.full(store.n_variants, 0.5) for _ in range(n_stores)]
    for s in range(n_stores):
        rows = used & (variants.store == s)
        p = variants.frequency[rows]
        frequencies[s][match.new_index[rows]] = np.where(match.sign[rows] > 0, p, 1.0 - p)
    scored, indices, stores, blocks = [], [], [], []
    for g, name in enumerate(names):
        rows = np.flatnonzero(used & (variants.component == g))
        if rows.size == 0:
            logger.warning(
                "component %s: none of its %d variants is in %s: it scores 0",
                name,
                int(np.sum(variants.component == g)),
                store.path,
            )
            continue
        rows = rows[np.argsort(match.new_index[rows])]
        scored.append(g)
        indices.append(match.new_index[rows])
        stores.append(int(variants.store[rows[0]]))
        blocks.append(effect[rows])
    spec = Components(tuple(names[g] for g in scored), tuple(indices), tuple(stores), source=f"fit variants in {store.path}")

    scores = np.zeros((store.n_samples, len(names)))
    with GenotypeOperator(
        [store] * n_stores,
        spec,
        client=client,
        dtype=np.dtype(dtype),
        memory_budget=memory_budget,
        min_maf=0.0,
        max_missing=1.0,
        frequencies=frequencies,
    ) as operator:
        t_load = time.perf_counter() - t0 - t_match
        dashboard = getattr(operator.client, "dashboard_link", None)
        logger.info("scoring %d sample(s) on %d component(s); dashboard: %s", store.n_samples, len(scored), dashboard)
        scores[:, scored] = operator.z_matmat(blocks).T
        passes = operator.passes
    end = time.perf_counter() - t0
    settings = {
        "worker_dtype": np.dtype(dtype).name,
        "memory_budget": memory_budget,
        "keep_ambiguous": match.keep_ambiguous,
        "min_maf": 0.0,
        "max_missing": 1.0,
        "missing_calls": "training mean (z = 0)",
    }
    return Prediction(
        names=names,
        sample_fid=store.sample_family_id,
        sample_iid=store.sample_id,
        scores=scores,
        total=scores.sum(axis=1),
        counts=match.counts(),
        unscored=tuple(n for g, n in enumerate(names) if g not in scored),
        store=str(store.path),
        settings=settings,
        passes=passes,
        dashboard=dashboard,
        timings={"match": t_match, "shard_load": t_load, "score": end - t_match - t_load, "end_to_end": end},
    )
