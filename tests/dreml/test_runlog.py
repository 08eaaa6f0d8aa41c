"""`dreml.runlog`: PREFIX.log of real `dreml` runs (a fit on a real cluster, a failed fit, a
quiet `dreml simulate` in its own process) and the JSON metadata; the log's record filter,
end lines and an unwritable log, on `recording` directly."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from datetime import datetime

import pytest

from converters import convert
from dreml import runlog
from dreml._version import __version__
from dreml.cli import main as dreml_main
from dreml.simulate import SimulationConfig, simulate_cohort

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"  # to the second, with the UTC offset


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, client):
    root = tmp_path_factory.mktemp("runlog")
    simulate_cohort(SimulationConfig(n_samples=200, n_variants=300, n_chromosomes=2, seed=4), root / "c")
    convert("bed", root / "c", root / "c.zarr", client=client)
    return root


def _header_and_end(lines: list[str], argv: list[str], status: int) -> None:
    """The header lines (module docstring of dreml.runlog) and the last two lines."""
    assert lines[0] == f"dreml {__version__}"
    assert lines[1] == "Command: " + " ".join(argv)
    assert re.fullmatch(f"Started: {ISO}", lines[2]) and lines[3].startswith("Host: ")
    assert lines[4].startswith("Working directory: ")
    assert re.fullmatch(r"Python [\d.]+, NumPy [\d.]+, SciPy [\d.]+, JAX .+, Dask .+, distributed .+", lines[5])
    assert re.fullmatch(rf"Finished: {ISO} \(\d+\.\d s\)", lines[-2]) and lines[-1] == f"Exit status: {status}"


def test_dreml_fit_cli__log_and_json_metadata(cohort, client, tmp_path):
    prefix = tmp_path / "out" / "fit"  # the directory is created
    argv = [
        "-q",
        "fit",
        "--store",
        str(cohort / "c.zarr"),
        "--pheno",
        str(cohort / "c.pheno"),
        "--out",
        str(prefix),
        "--scheduler",
        client.scheduler.address,
        "--seed",
        "1",
        "--exact",
    ]
    assert dreml_main(argv) == 0
    lines = (tmp_path / "out" / "fit.log").read_text().splitlines()
    _header_and_end(lines, ["dreml", *argv], 0)
    # INFO records of the dreml loggers despite -q: the cluster, the fit, its iterations
    assert any(line.startswith(f"connected to {client.scheduler.address} with 2 worker(s)") for line in lines)
    assert any(line.startswith("fitting 1 component(s) on") for line in lines)
    report = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert report["dreml_version"] == __version__ and report["argv"] == ["dreml", *argv]
    assert f"Started: {report['started']}" == lines[2]
    assert datetime.fromisoformat(report["started"]) <= datetime.fromisoformat(report["finished"])


def test_dreml_fit_cli__log_ends_with_the_error(cohort, tmp_path, capsys):
    bad = tmp_path / "bad.pheno"
    bad.write_text("FID IID y\nF1 I1 1.0\nF2 I2 abc\n")
    argv = ["fit", "--store", str(cohort / "c.zarr"), "--pheno", str(bad), "--out", str(tmp_path / "o")]
    assert dreml_main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("dreml: error: ") and "non-numeric value 'abc'" in error
    lines = (tmp_path / "o.log").read_text().splitlines()
    _header_and_end(lines, ["dreml", *argv], 2)
    assert lines[-3] == error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pheno", "o.log"]  # no output, only the log


def test_dreml_simulate_cli__quiet_stderr_full_log(tmp_path):
    # its own process: the entry point's stderr handler, not pytest's capture
    argv = ["-q", "simulate", "--out", str(tmp_path / "s"), "--samples", "20", "--variants", "30"]
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from dreml.cli import main; sys.exit(main())", *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr == ""
    lines = (tmp_path / "s.log").read_text().splitlines()
    _header_and_end(lines, ["dreml", *argv], 0)
    assert lines[6:-2] == ["simulated variants 0-30 of 30"]


def test_recording__records_filtered_by_logger_and_level(tmp_path):
    path = tmp_path / "r.log"
    levels = [logging.getLogger(name).level for name in runlog.OWN_LOGGERS]
    with runlog.recording(["prog", "--out", "a b"], path) as run:
        logging.getLogger("dreml.x").info("ours at info")
        logging.getLogger("converters.y").debug("ours at debug")
        logging.getLogger("other").info("theirs at info")
        logging.getLogger("other").warning("theirs at warning")
        assert runlog.current() is run
        run.set_exit(3, "prog: error: it failed")
        logging.getLogger("dreml.x").warning("after set_exit, still before the end lines")
    lines = path.read_text().splitlines()
    assert lines[1] == "Command: prog --out 'a b'"  # quoted as a shell would need it
    assert lines[6:] == [
        "ours at info",
        "theirs at warning",
        "after set_exit, still before the end lines",
        "prog: error: it failed",
        lines[-2],
        "Exit status: 3",
    ]
    assert runlog.current().argv is None  # no run in progress after the block
    assert [logging.getLogger(name).level for name in runlog.OWN_LOGGERS] == levels
    logging.getLogger("dreml.x").warning("after the block")
    assert "after the block" not in path.read_text()


@pytest.mark.parametrize(
    "exc, status, line", [(ValueError("boom"), 1, "ValueError: boom"), (KeyboardInterrupt(), 130, "KeyboardInterrupt")]
)
def test_recording__exception_ends_the_log(tmp_path, exc, status, line):
    path = tmp_path / "r.log"
    with pytest.raises(type(exc)), runlog.recording(["prog"], path):
        raise exc
    lines = path.read_text().splitlines()
    assert lines[-3] == line and lines[-1] == f"Exit status: {status}"


def test_recording__unwritable_log_warns_and_runs_on(tmp_path, caplog):
    (tmp_path / "afile").write_text("")
    with runlog.recording(["prog"], tmp_path / "afile" / "r.log") as run:
        assert run.path is None
    assert "cannot write the log" in caplog.text and "afile" in caplog.text
