"""Text inputs, plain or compressed: every file a user gives (phenotypes, covariates, sample and
variant lists, component files, .fam/.bim/.psam/.pvar) is opened here.

The compression is read from the file's first bytes, not its name (a `.gz` renamed `.txt`
still reads): gzip (1f 8b) through the standard library, Zstandard (28 b5 2f fd) through
`zstandard`. Text is UTF-8; a byte that is not is an `InputError` naming the file.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import zstandard

from dreml.errors import InputError

# first fields that mark a header line in a file of variant IDs (PLINK, GCTA, LDSC, REGENIE habits)
VARIANT_HEADER_WORDS = frozenset({"snp", "id", "#id", "rsid", "variant", "variant_id", "snpid", "marker", "markername", "name"})

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"


def compression(path: str | Path) -> str | None:
    """'gzip', 'zstd' or None (plain) from the first bytes of `path`."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_ZSTD):
        return "zstd"
    return None


def open_text(path: str | Path) -> TextIO:
    """`path` opened for reading text, decompressed on the fly; a missing file is an `InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    kind = compression(path)
    if kind == "gzip":
        return gzip.open(path, "rt", encoding="utf-8")
    if kind == "zstd":
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        return io.TextIOWrapper(raw, encoding="utf-8")
    return open(path, encoding="utf-8")


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) for every line of `path`.

    A decoding or decompression failure is an `InputError` naming the file and the line.
    """
    lineno = 0
    try:
        with open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                yield lineno, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: line {lineno + 1}: not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError, zstandard.ZstdError) as exc:
        raise InputError(f"{path}: line {lineno + 1}: cannot decompress ({exc})") from None


def is_number(text: str) -> bool:
    """Whether `text` parses as a float (a header word does not)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
