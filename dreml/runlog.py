"""The run log, PREFIX.log, of every command with an output prefix (as GCTA and PLINK write
theirs), and the run's metadata that the JSON reports record.

    dreml 0.1.0
    Command: dreml fit --store c.zarr --pheno c.pheno --out res
    Started: 2025-01-31T10:00:00+01:00
    Host: node17
    Working directory: /data/run
    Python 3.11.7, NumPy 2.4.6, SciPy 1.16.0, JAX 0.10.2, Dask 2026.8.0, distributed 2026.8.0
    connected to tcp://127.0.0.1:40123 with 2 worker(s); dashboard: http://127.0.0.1:8787/status
    ...                                  every log record of the run (below)
    dreml: error: ...                    only when the run failed, as stderr shows it
    Finished: 2025-01-31T10:03:12+01:00 (192.3 s)
    Exit status: 0

The records are those of the `dreml.*` and `converters.*` loggers at INFO and above and of
any other logger at WARNING and above, in the text stderr shows, whatever `-q` keeps on
stderr. The Dask cluster appears through them: `dreml.cluster.connect` logs the scheduler
address, the workers and the dashboard.

Unlike the outputs, which appear whole through a rename, the log is written as the run goes,
each record flushed: it is read while a run is going and after a crash. An exception that
ends the run (a bug, Ctrl-C) still gets its error and end lines; a run killed by a signal
Python does not turn into an exception (SIGTERM, SIGKILL, a lost node) leaves a log without
them.

Times are ISO 8601 with the local time zone. `argv` is the command line as the program
received it, its name first (`dreml`, `dreml-convert`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shlex
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TextIO

from dreml._version import __version__

logger = logging.getLogger(__name__)

# loggers whose INFO records belong in the log; every other logger's from WARNING up
OWN_LOGGERS = ("dreml", "converters")
# versions in the header: (label, distribution name)
VERSIONS = (("NumPy", "numpy"), ("SciPy", "scipy"), ("JAX", "jax"), ("Dask", "dask"), ("distributed", "distributed"))


def now() -> str:
    """The current time, ISO 8601 to the second with the local UTC offset."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def versions() -> str:
    """'Python 3.11.7, NumPy 2.4.6, ...' without importing the packages (JAX takes seconds)."""
    parts = [f"Python {platform.python_version()}"]
    for label, name in VERSIONS:
        try:
            parts.append(f"{label} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{label} not installed")
    return ", ".join(parts)


@dataclass
class Run:
    """One command's run: what the JSON reports record and, with a `stream`, its open log.

    Fields:
        argv: the command line, program name first (None outside a command: the Python API).
        started: ISO 8601 start time (None outside a command).
        path, stream: the log file and its open stream, or None when there is no log.
        status, error: the exit status and a failed run's one-line error (`set_exit`).
    """

    argv: list[str] | None
    started: str | None
    path: Path | None = None
    stream: TextIO | None = field(default=None, repr=False)
    status: int = 0
    error: str | None = None

    def metadata(self) -> dict:
        """The keys every JSON report starts with: `dreml_version`, `argv`, `started` and
        `finished` (now: when the report is written)."""
        return {"dreml_version": __version__, "argv": self.argv, "started": self.started, "finished": now()}

    def write(self, *lines: str) -> None:
        """Append lines to the log, flushed (nothing without a log)."""
        if self.stream is not None:
            self.stream.write("".join(line + "\n" for line in lines))
            self.stream.flush()

    def set_exit(self, status: int, error: str | None = None) -> int:
        """Record the exit `status` and, for a failed run, its one-line `error` (as stderr
        shows it), which `recording` writes at the end of the log; returns `status`."""
        self.status, self.error = status, error
        return status


_current: ContextVar[Run | None] = ContextVar("dreml_run", default=None)


def current() -> Run:
    """The run in progress, or outside any (the Python API) one with `argv` and `started` None."""
    return _current.get() or Run(argv=None, started=None)


class _RecordFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.partition(".")[0] in OWN_LOGGERS
        return record.levelno >= (logging.INFO if own else logging.WARNING)


@contextlib.contextmanager
def _info_enabled() -> Iterator[None]:
    """Our loggers at INFO for the run (restored after): a `-q` run, or a host application
    whose root logger is at WARNING, still logs its progress to the file. setLevel, not an
    attribute: it clears the loggers' caches of enabled levels."""
    lowered = [lg for lg in map(logging.getLogger, OWN_LOGGERS) if not lg.isEnabledFor(logging.INFO)]
    previous = [lg.level for lg in lowered]
    for lg in lowered:
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(lowered, previous):
            lg.setLevel(level)


def _open_log(path: Path) -> TextIO | None:
    """`path` opened for writing (its directory created, as the outputs' writers do), or None
    with a warning: a log that cannot be written must not stop the run, whose own checks of
    its output prefix then give the error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        logger.warning("cannot write the log %s: %s", path, exc.strerror or exc)
        return None


@contextlib.contextmanager
def recording(argv: Sequence[str], log: str | Path | None) -> Iterator[Run]:
    """Make `Run(argv)` the run in progress and, with a `log` path, write the log there.

    The header is written on entry, the end lines when the block is left: the error and
    status given to `run.set_exit` (status 0 without a call), or for an exception leaving the
    block the last line of its traceback and the status Python exits with (130 for Ctrl-C,
    else 1).
    """
    t0 = time.monotonic()
    path = None if log is None else Path(log)
    stream = None if path is None else _open_log(path)
    args = list(argv)
    run = Run(argv=args, started=now(), path=path if stream else None, stream=stream)
    run.write(
        f"dreml {__version__}",
        f"Command: {shlex.join(args)}",
        f"Started: {run.started}",
        f"Host: {socket.gethostname()}",
        f"Working directory: {os.getcwd()}",
        versions(),
    )
    handler = None
    if stream is not None:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))  # the text stderr shows
        handler.addFilter(_RecordFilter())
        logging.getLogger().addHandler(handler)
    token = _current.set(run)
    try:
        with _info_enabled():
            yield run
    except BaseException as exc:
        run.set_exit(130 if isinstance(exc, KeyboardInterrupt) else 1, traceback.format_exception_only(exc)[-1].strip())
        raise
    finally:
        _current.reset(token)
        if handler is not None:  # first, so that no record lands after the end lines
            logging.getLogger().removeHandler(handler)
        run.write(
            *([run.error] if run.error else []),
            f"Finished: {now()} ({time.monotonic() - t0:.1f} s)",
            f"Exit status: {run.status}",
        )
        if stream is not None:
            stream.close()


def configure_stderr(*, quiet: bool) -> None:
    """Log records as bare messages on stderr, only warnings and errors with `quiet` (the
    handler's level, not the loggers': the log file keeps INFO either way)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING if quiet else logging.NOTSET)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", handlers=[handler])


def run_command(
    program: str,
    argv: Sequence[str],
    command: Callable[[], int | None],
    *,
    log: str | Path | None,
    errors: tuple[type[BaseException], ...],
) -> int:
    """Run `command()` inside `recording([program, *argv], log)` and return its exit status.

    An exception of the types `errors` (the program's own, with a message written for the
    user) becomes one line `PROGRAM: error: MESSAGE` on stderr and in the log, and exit
    status 2; any other propagates (its end lines are written by `recording`).
    """
    with recording([program, *argv], log) as run:
        try:
            return run.set_exit(int(command() or 0))
        except errors as exc:
            message = f"{program}: error: {exc}"
            print(message, file=sys.stderr)
            return run.set_exit(2, message)
