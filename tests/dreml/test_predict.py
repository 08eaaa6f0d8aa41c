"""`dreml.predict` and `dreml predict` on real stores, a real fit and a real local Dask cluster.

References, independent of dreml's operator code: the fit's own BLUPs u_g = theta_g K_g P y
(exact path, float64) on the training store, and on a second store the scores computed
densely here from genotypes decoded by pgenlib, the TRAINING frequencies and
`FitState.snp_effect`, with the test's own record of which variants it deleted, swapped,
duplicated or re-allelled.
"""

import dataclasses
import json

import numpy as np
import pytest

from converters import convert
from dreml.cli import main as dreml_main
from dreml.errors import InputError
from dreml.fit import ComponentChoice, fit
from dreml.fit_result import FitState
from dreml.outputs import write_outputs
from dreml.plink_write import write_plink1
from dreml.predict import STATUS_NAMES, MatchStatus, check_overlap, match_variants, predict
from dreml.reml import FitConfig
from dreml.store import open_store
from tests.plink_reference import read_dosage

N, M = 360, 1000
AMBIGUOUS = {"AT", "TA", "CG", "GC"}


def read_plink(prefix, n, m):
    """Dosages (variants x samples, -1 missing) decoded by pgenlib, and the .bim columns parsed by hand."""
    dosage = read_dosage(prefix, n, m)
    bim = [line.split() for line in open(f"{prefix}.bim")]
    contig, vid, pos, alt, ref = (np.array([row[k] for row in bim]) for k in (0, 1, 3, 4, 5))
    return dosage, contig, vid, pos.astype(np.int64), ref, alt


@pytest.fixture(scope="module")
def trained(tmp_path_factory, client):
    from dreml.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("predict")
    simulate_cohort(SimulationConfig(n_samples=N, n_variants=M, seed=21, group_variances=(0.4, 0.2)), root / "c")
    convert("bed", root / "c", root / "c.zarr", variant_chunk=300, sample_chunk=256)
    result = fit(
        root / "c.zarr",
        root / "c.pheno",
        covar=root / "c.covar",
        components=ComponentChoice(spec=root / "c.components.tsv"),
        client=client,
        config=FitConfig(method="exact", worker_dtype="float64"),
    )
    write_outputs(result, root / "fit")
    state = FitState.load(root / "fit.fit.npz")  # what `dreml predict` reads
    return root, state


@pytest.fixture(scope="module")
def new_store(trained):
    """Another store: a shuffled subset of the samples; the fit's variants shuffled, some deleted,
    some with REF/ALT swapped (dosage 2 - x), some with other alleles, some twice, plus
    multi-allelic neighbours and variants the fit never saw. Returns the store and the
    expected status, new-store row and sign per variant row of the fit."""
    root, state = trained
    dosage, contig, vid, pos, ref, alt = read_plink(root / "c", N, M)
    rng = np.random.default_rng(5)
    samples = rng.permutation(N)[:150]
    v = state.variants
    R = len(v.id)
    fate = rng.choice(["keep", "swap", "delete", "other", "twice"], size=R, p=[0.55, 0.25, 0.12, 0.04, 0.04])
    rows = {k: [] for k in ("dosage", "contig", "id", "position", "ref", "alt")}

    def add(x, c, i, p, r, a):
        for key, value in zip(rows, (x, c, i, p, r, a)):
            rows[key].append(value)
        return len(rows["id"]) - 1

    bases = np.array(list("ACGT"))
    expected_row, sign = np.full(R, -1), np.zeros(R)
    status = np.empty(R, dtype=object)
    for r in range(R):
        j = v.index[r]
        x = dosage[j, samples]
        if fate[r] == "delete":
            status[r] = "missing"
        elif fate[r] == "other":  # the two other bases: neither the same pair nor swapped
            a, b = bases[~np.isin(bases, [ref[j], alt[j]])]
            add(x, contig[j], vid[j] + "_o", pos[j], a, b)
            status[r] = "missing"
        elif fate[r] == "twice":
            add(x, contig[j], vid[j], pos[j], ref[j], alt[j])
            add(x, contig[j], vid[j] + "_b", pos[j], ref[j], alt[j])
            status[r] = "duplicate"
        else:
            swapped = fate[r] == "swap"
            k = add(
                np.where(x < 0, -1, 2 - x).astype(np.int8) if swapped else x,
                contig[j],
                vid[j],
                pos[j],
                alt[j] if swapped else ref[j],
                ref[j] if swapped else alt[j],
            )
            if ref[j] + alt[j] in AMBIGUOUS:
                status[r] = "ambiguous"
            else:
                status[r], expected_row[r], sign[r] = ("swapped" if swapped else "matched"), k, -1.0 if swapped else 1.0
            if r % 10 == 0:  # a multi-allelic neighbour: same position, another ALT
                add(
                    rng.integers(0, 3, size=len(samples)).astype(np.int8),
                    contig[j],
                    vid[j] + "_m",
                    pos[j],
                    ref[j],
                    bases[~np.isin(bases, [ref[j], alt[j]])][0],
                )
    for j in rng.choice(M, size=20, replace=False):  # positions the fit never saw
        add(rng.integers(0, 3, size=len(samples)).astype(np.int8), contig[j], vid[j] + "_x", pos[j] + 1, "A", "G")
    order = rng.permutation(len(rows["id"]))
    new_row = np.argsort(order)  # where each added row lands
    expected_row[expected_row >= 0] = new_row[expected_row[expected_row >= 0]]
    prefix = root / "new"
    write_plink1(
        prefix,
        np.array(rows["dosage"])[order],
        contig=np.array(rows["contig"])[order],
        variant_id=np.array(rows["id"])[order],
        position=np.array(rows["position"])[order],
        alt=np.array(rows["alt"])[order],
        ref=np.array(rows["ref"])[order],
        family_id=np.array([f"F{i + 1}" for i in samples]),
        sample_id=np.array([f"I{i + 1}" for i in samples]),
    )
    convert("bed", prefix, root / "new.zarr", variant_chunk=170, sample_chunk=64)
    return root / "new.zarr", status, expected_row, sign, fate


def dense_scores(state, store_path, expected_row, sign):
    """sum_j z_ij b_j per component, with the new store's genotypes decoded by pgenlib, put
    back on the training orientation by the test's own record, and standardised with the
    training frequencies (missing -> 0)."""
    n, m = open_store(store_path).n_samples, open_store(store_path).n_variants
    dosage, *_ = read_plink(store_path.with_suffix(""), n, m)
    out = np.zeros((n, len(state.names) - 1))
    for r in np.flatnonzero(expected_row >= 0):
        x = dosage[expected_row[r]].astype(np.float64)
        x = np.where(x < 0, np.nan, x if sign[r] > 0 else 2.0 - x)
        p = state.variants.frequency[r]
        z = np.nan_to_num((x - 2 * p) / np.sqrt(2 * p * (1 - p)))
        out[:, state.variants.component[r]] += z * state.snp_effect[r]
    return out


def relative_error(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_predict__training_store_reproduces_the_blups(trained, client):
    root, state = trained
    # the simulator draws A/T and C/G pairs too: on its own store their strand is known
    pred = predict(state, root / "c.zarr", client=client, dtype=np.float64, keep_ambiguous=True)
    store = open_store(root / "c.zarr")
    at = {iid: i for i, iid in enumerate(store.sample_id)}
    analysed = np.array([at[iid] for iid in state.sample_iid])
    blup = state.blup()  # shape: (G, n)
    assert pred.scores.shape == (N, len(state.names) - 1)
    for g in range(len(state.names) - 1):
        assert relative_error(pred.scores[analysed, g], blup[g]) < 1e-8
    assert relative_error(pred.total[analysed], blup.sum(axis=0)) < 1e-8
    R = len(state.variants.id)
    assert pred.counts["total"]["matched"] == pred.counts["total"]["used"] == R
    ambiguous = int(np.isin(np.strings.add(state.variants.ref, state.variants.alt), list(AMBIGUOUS)).sum())
    assert ambiguous > 0 and pred.counts["ambiguous_kept"] == ambiguous
    assert pred.passes == 1 and list(pred.sample_iid) == list(store.sample_id)
    # by default they are excluded, and counted
    default = match_variants(state.variants, store).counts()["total"]
    assert (default["ambiguous"], default["matched"]) == (ambiguous, R - ambiguous)


def test_predict__new_store_matches_dense_scores(trained, new_store, client):
    root, state = trained
    path, status, expected_row, sign, fate = new_store
    pred = predict(state, path, client=client, dtype=np.float64)
    expected = dense_scores(state, path, expected_row, sign)
    for g in range(expected.shape[1]):
        assert relative_error(pred.scores[:, g], expected[:, g]) < 1e-8
    assert relative_error(pred.total, expected.sum(axis=1)) < 1e-8
    for name in STATUS_NAMES:
        assert pred.counts["total"][name] == int(np.sum(status == name)), name
        for g, row in enumerate(pred.counts["components"]):
            assert row[name] == int(np.sum((status == name) & (state.variants.component == g))), (name, g)
    assert pred.counts["total"]["swapped"] > 20 and pred.counts["total"]["ambiguous"] > 20
    assert pred.counts["total"]["missing_other_alleles"] == int(np.sum(fate == "other"))
    match = match_variants(state.variants, open_store(path))
    used = match.status <= MatchStatus.SWAPPED
    np.testing.assert_array_equal(match.new_index[used], expected_row[used])
    np.testing.assert_array_equal(match.sign, sign)


def test_predict__cli_writes_scores_and_report(trained, new_store, client, tmp_path, capsys):
    root, state = trained
    path, status, expected_row, sign, _ = new_store
    out = tmp_path / "out" / "p"  # the directory is created
    rc = dreml_main(
        ["predict", "--fit", str(root / "fit"), "--store", str(path), "--out", str(out), "--scheduler", client.scheduler.address]
    )
    assert rc == 0
    assert "Wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["p.log", "p.predict.json", "p.score.tsv"]  # no .tmp left
    lines = (tmp_path / "out" / "p.score.tsv").read_text().splitlines()
    names = list(state.names[:-1])
    assert lines[0].split("\t") == ["FID", "IID", *names, "total"]
    store = open_store(path)
    table = [line.split("\t") for line in lines[1:]]
    assert [row[1] for row in table] == list(store.sample_id) and [row[0] for row in table] == list(store.sample_family_id)
    values = np.array([[float(x) for x in row[2:]] for row in table])
    expected = dense_scores(state, path, expected_row, sign)
    # float32 workers (the default) and 6 significant digits
    assert relative_error(values[:, :-1], expected) < 1e-4
    assert relative_error(values[:, -1], expected.sum(axis=1)) < 1e-4
    report = json.loads((tmp_path / "out" / "p.predict.json").read_text())
    assert report["fit"] == str(root / "fit") and report["store"] == str(path) and report["passes"] == 1
    assert report["counts"]["total"]["swapped"] == int(np.sum(status == "swapped"))
    assert report["settings"]["worker_dtype"] == "float32" and report["n_samples"] == store.n_samples
    assert report["dashboard"] and report["timings"]["end_to_end"] > 0


@pytest.fixture(scope="module")
def elsewhere(trained):
    """A store whose variants sit at positions the fit never used (the simulator's start at 100)."""
    root, _ = trained
    rng = np.random.default_rng(3)
    write_plink1(root / "elsewhere", rng.integers(0, 3, size=(30, 20)).astype(np.int8), position=np.arange(1, 31))
    convert("bed", root / "elsewhere", root / "elsewhere.zarr")
    return root / "elsewhere.zarr"


def test_predict__raise_on_no_overlapping_variants(trained, elsewhere, client, tmp_path, capsys):
    root, state = trained
    store = open_store(elsewhere)
    with pytest.raises(InputError, match=r"elsewhere\.zarr: none of the fit's \d+ variant rows matches"):
        check_overlap(match_variants(state.variants, store), state.variants, store)
    with pytest.raises(InputError, match="none of the fit's"):
        predict(state, elsewhere, client=client)
    out = tmp_path / "p"
    rc = dreml_main(
        [
            "predict",
            "--fit",
            str(root / "fit"),
            "--store",
            str(elsewhere),
            "--out",
            str(out),
            "--scheduler",
            client.scheduler.address,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(elsewhere) in err
    assert [p.name for p in tmp_path.iterdir()] == ["p.log"]  # the run log only


@pytest.mark.parametrize("content", [None, b"not an npz"])
def test_predict__raise_on_missing_or_invalid_fit_file(trained, content, client, tmp_path, capsys):
    root, _ = trained
    if content is not None:
        (tmp_path / "bad.fit.npz").write_bytes(content)
    before = sorted(tmp_path.iterdir())
    rc = dreml_main(
        [
            "predict",
            "--fit",
            str(tmp_path / "bad"),
            "--store",
            str(root / "c.zarr"),
            "--out",
            str(tmp_path / "p"),
            "--scheduler",
            client.scheduler.address,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "bad.fit.npz" in err
    assert sorted(tmp_path.iterdir()) == sorted([*before, tmp_path / "p.log"])  # the run log only


def test_predict__component_without_variants_scores_zero(trained, client, caplog):
    root, state = trained
    dosage, contig, vid, pos, ref, alt = read_plink(root / "c", N, M)
    keep = np.flatnonzero(np.isin(contig, ["3", "4"]))  # the variants of component chr3-4 only
    write_plink1(
        root / "chr34",
        dosage[keep][:, :40],
        contig=contig[keep],
        variant_id=vid[keep],
        position=pos[keep],
        alt=alt[keep],
        ref=ref[keep],
        family_id=np.array([f"F{i + 1}" for i in range(40)]),
        sample_id=np.array([f"I{i + 1}" for i in range(40)]),
    )
    convert("bed", root / "chr34", root / "chr34.zarr")
    pred = predict(state, root / "chr34.zarr", client=client, dtype=np.float64, keep_ambiguous=True)
    assert pred.unscored == ("chr1-2",) and "component chr1-2: none of its" in caplog.text
    assert not pred.scores[:, 0].any()
    row_of = {j: k for k, j in enumerate(keep)}
    expected_row = np.array([row_of.get(j, -1) for j in state.variants.index])
    expected = dense_scores(state, root / "chr34.zarr", expected_row, (expected_row >= 0).astype(float))
    assert relative_error(pred.scores, expected) < 1e-8


def test_predict__fit_over_two_stores(trained, new_store, client):
    """Each training store's variants are standardised with that store's frequencies: one
    copy of the new store per training store (here the fit's components posing as two stores)."""
    root, state = trained
    path, _, expected_row, sign, _ = new_store
    v = state.variants
    two = dataclasses.replace(state, variants=dataclasses.replace(v, store=(v.component == 1).astype(np.int64)))
    pred = predict(two, path, client=client, dtype=np.float64)
    assert relative_error(pred.scores, dense_scores(state, path, expected_row, sign)) < 1e-8
