"""`dreml-convert` as a user runs it: the console script in real subprocesses."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from plink_fixtures import compress_file, random_dosage, write_bed_fileset, write_pgen_with_multiallelic

from converters.cli import main
from converters.convert import partial_path
from converters.verify import verify
from dreml._version import __version__
from dreml.store import StoreError, open_store

SCRIPT = str(Path(sys.executable).with_name("dreml-convert"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_cli__raise_on_missing_companion_file_exit_2(tmp_path):
    result = run_cli("bed", str(tmp_path / "absent"), str(tmp_path / "x.zarr"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dreml-convert: error: {tmp_path / 'absent.bed'}: no such file (a fileset needs absent.bed, absent.bim, absent.fam)"
    ]
    assert not (tmp_path / "x.zarr").exists()


def test_main__raise_on_unwritable_output_exit_2(tmp_path, rng, capsys):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "x.zarr"
    assert main(["-q", "bed", str(tmp_path / "x"), str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dreml-convert: error: [Errno 20] Not a directory: '{partial_path(out)}'"]


def test_cli__info_verify_and_existing_output(tmp_path, rng, capsys):
    dosage = random_dosage(rng, 30, 11)
    write_bed_fileset(tmp_path / "x", dosage)
    # in-process with a 1-worker local cluster: the same code path as the console script
    assert main(["-q", "bed", str(tmp_path / "x"), str(tmp_path / "x.zarr"), "--workers", "1", "--variant-chunk", "8"]) == 0
    assert main(["info", str(tmp_path / "x.zarr")]) == 0
    assert "variants       30" in capsys.readouterr().out
    assert main(["-q", "verify", str(tmp_path / "x.zarr"), str(tmp_path / "x")]) == 0
    assert capsys.readouterr().out.strip().endswith("OK: compared 330 genotypes")
    assert main(["bed", str(tmp_path / "x"), str(tmp_path / "x.zarr")]) == 2
    assert "output already exists (pass --overwrite" in capsys.readouterr().err
    dosage[4, 0] = 2 if dosage[4, 0] != 2 else 0
    write_bed_fileset(tmp_path / "x", dosage)
    assert main(["-q", "verify", str(tmp_path / "x.zarr"), str(tmp_path / "x")]) == 1
    assert main(["info", str(tmp_path / "nothing.zarr")]) == 2


def test_cli__killed_midway_leaves_no_valid_store_and_rerun_succeeds(tmp_path, rng):
    write_bed_fileset(tmp_path / "big", random_dosage(np.random.default_rng(5), 3000, 1000))
    out = tmp_path / "big.zarr"
    args = [
        "-q",
        "bed",
        str(tmp_path / "big"),
        str(out),
        "--workers",
        "1",
        "--variant-chunk",
        "10",
        "--sample-chunk",
        "256",
    ]
    # own session, so that the whole process group (the CLI and its Dask worker) can be killed
    process = subprocess.Popen([SCRIPT, *args], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    chunks = partial_path(out) / "call_dosage" / "c"
    deadline = time.monotonic() + 60
    while not (chunks.is_dir() and any(chunks.iterdir())):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "conversion never started writing chunks"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not out.exists()
    with pytest.raises(StoreError, match="store is incomplete"):
        open_store(partial_path(out))
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert not partial_path(out).exists()
    report = verify(open_store(out), tmp_path / "big")
    assert report.ok and report.n_genotypes == 3000 * 1000, report.mismatches


def test_cli__pgen_max_alleles_and_compressed_pvar(tmp_path, rng, capsys):
    dosage = random_dosage(rng, 12, 5)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    kept = write_pgen_with_multiallelic(tmp_path / "x", dosage, meta, [2, 7])
    compress_file(tmp_path / "x.pvar", "zst")
    out = str(tmp_path / "x.zarr")
    assert main(["-q", "pgen", str(tmp_path / "x"), out, "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.pvar.zst: line 4: variant 'snp2' (ALT 'G,T') is multi-allelic" in err[0]
    assert "pass --max-alleles 2" in err[0]
    assert main(["-q", "pgen", str(tmp_path / "x"), out, "--workers", "1", "--max-alleles", "2"]) == 0
    assert "skipped        2 multi-allelic variant(s)" in capsys.readouterr().out
    np.testing.assert_array_equal(open_store(out).dosage(0, 10), kept)
    assert main(["-q", "verify", out, str(tmp_path / "x")]) == 0
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses anything but 2
        main(["pgen", str(tmp_path / "x"), out, "--max-alleles", "3"])
    assert exit_info.value.code == 2 and "invalid choice: 3 (choose from 2)" in capsys.readouterr().err


def test_main__subset_writes_run_log_beside_store(tmp_path, rng, capsys):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 30, 11))  # contigs chr1, 2, chr3: 10 variants each
    (tmp_path / "keep").write_text("#IID\nind1\nind4\nind7\n")
    out = f"{tmp_path / 'x.zarr'}/"  # the log is OUT.log without the trailing slash
    argv = [
        "-q",
        "bed",
        str(tmp_path / "x"),
        out,
        "--workers",
        "1",
        "--variant-chunk",
        "4",
        "--keep",
        str(tmp_path / "keep"),
        "--chr",
        "1-2",
    ]
    assert main(argv) == 0
    log = (tmp_path / "x.zarr.log").read_text().splitlines()
    assert log[:2] == [f"dreml {__version__}", f"Command: {shlex.join(['dreml-convert', *argv])}"]
    assert "selected 3 of 11 samples and 20 of 30 variants" in log  # INFO records, even with -q
    assert log[-2].startswith("Finished: ") and log[-1] == "Exit status: 0"
    capsys.readouterr()
    assert main(["info", out]) == 0
    printed = capsys.readouterr().out
    assert f"selected       3 of 11 input samples (--keep {tmp_path / 'keep'})" in printed
    assert "selected       20 of 30 input variants (--chr 1,2)" in printed
    assert main(["-q", "verify", out, str(tmp_path / "x")]) == 0
    assert capsys.readouterr().out.strip().endswith("OK: compared 60 genotypes")
    assert not (tmp_path / "x.zarr.log.log").exists() and len(list(tmp_path.glob("*.log"))) == 1


def test_cli__raise_on_empty_selection_one_line_and_log(tmp_path, rng):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    (tmp_path / "e").write_text("SNP\nrs_absent\n")
    result = run_cli("bed", str(tmp_path / "x"), str(tmp_path / "x.zarr"), "--extract", str(tmp_path / "e"))
    assert result.returncode == 2
    error = "dreml-convert: error: no variant left after --extract/--exclude/--chr"
    assert result.stderr.strip().splitlines()[-1] == error and result.stderr.count("error") == 1
    assert not (tmp_path / "x.zarr").exists() and not partial_path(tmp_path / "x.zarr").exists()
    log = (tmp_path / "x.zarr.log").read_text().splitlines()
    assert log[-3:-1] == [error, log[-2]] and log[-2].startswith("Finished: ") and log[-1] == "Exit status: 2"
