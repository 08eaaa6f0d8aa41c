"""`dreml.simulate`: reproducible files, genotypes readable by pgenlib, a truth JSON consistent with them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreml.simulate import SimulationConfig, simulate_cohort, standardise
from tests.plink_reference import read_dosage

CONFIG = SimulationConfig(
    n_samples=61, n_variants=300, n_chromosomes=3, group_variances=(0.3, 0.2), n_traits=2, chunk_variants=70, seed=9
)
EXTENSIONS = ("bed", "bim", "fam", "pheno", "covar", "components.tsv", "truth.json")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("sim") / "c"
    truth = simulate_cohort(CONFIG, prefix)
    return prefix, truth


def test_simulate_cohort__same_seed_same_bytes(cohort, tmp_path):
    prefix, _ = cohort
    simulate_cohort(CONFIG, tmp_path / "again")
    for ext in EXTENSIONS:
        again = (tmp_path / f"again.{ext}").read_bytes()
        if ext == "truth.json":  # file paths differ; everything else is identical
            first, second = json.loads(open(f"{prefix}.{ext}").read()), json.loads(again)
            assert {**first, "files": None} == {**second, "files": None}
        else:
            assert again == open(f"{prefix}.{ext}", "rb").read(), ext
    simulate_cohort(SimulationConfig(**{**CONFIG.__dict__, "seed": 10}), tmp_path / "other")
    assert (tmp_path / "other.bed").read_bytes() != open(f"{prefix}.bed", "rb").read()


def test_simulate_cohort__bed_decodes_to_plausible_genotypes(cohort):
    prefix, truth = cohort
    dosage = read_dosage(prefix, CONFIG.n_samples, CONFIG.n_variants)
    assert set(np.unique(dosage)) <= {-1, 0, 1, 2}
    missing = (dosage < 0).mean()
    assert 0.005 < missing < 0.05  # missing_rate 0.02 on average
    bim = [line.split() for line in open(f"{prefix}.bim")]
    assert len(bim) == CONFIG.n_variants and {row[0] for row in bim} == {"1", "2", "3"}
    assert all(row[4] != row[5] for row in bim)  # A1 (ALT) differs from A2 (REF)


def test_simulate_cohort__truth_consistent_with_files(cohort):
    prefix, truth = cohort
    saved = json.loads(open(f"{prefix}.truth.json").read())
    assert saved == json.loads(json.dumps(truth))
    assert saved["seed"] == CONFIG.seed and saved["h2_total"] == pytest.approx(0.5)
    assert saved["residual_variance"] == pytest.approx(1 - 0.5)
    dosage = read_dosage(prefix, CONFIG.n_samples, CONFIG.n_variants)
    _, polymorphic = standardise(dosage)
    contig = np.array([int(line.split()[0]) for line in open(f"{prefix}.bim")])
    for component in saved["components"]:
        in_group = np.isin(contig, component["chromosomes"])
        assert component["m_polymorphic"] == int((in_group & polymorphic).sum())
    components = dict(line.split("\t") for line in open(f"{prefix}.components.tsv").read().splitlines())
    assert len(components) == CONFIG.n_variants
    assert sorted(set(components.values())) == sorted(c["name"] for c in saved["components"])
    pheno = open(f"{prefix}.pheno").read().splitlines()
    assert pheno[0].split() == ["FID", "IID", "trait1", "trait2"] and len(pheno) == CONFIG.n_samples + 1
    assert set(saved["traits"]) == {"trait1", "trait2"}
    assert open(f"{prefix}.covar").readline().split() == ["FID", "IID", "sex", "age"]
