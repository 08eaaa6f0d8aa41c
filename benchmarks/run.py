"""`make bench`: run every benchmark and print one table each.

Each benchmark module provides `run(quick: bool) -> list[dict]`. `--quick` uses small sizes
(a smoke run); the figures in docs/performance.md come from full runs.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import time

import psutil

MODULES = (
    "benchmarks.convert",
    "benchmarks.operator",
    "benchmarks.reml",
    "benchmarks.validation",
    "benchmarks.fit",
    "benchmarks.method",
    "benchmarks.cv",
    "benchmarks.eigen",
    "benchmarks.gwas",
    "benchmarks.gwas_mixed",
    "benchmarks.traits",
    "benchmarks.sparse",
    "benchmarks.gpu",
    "benchmarks.lasso",
    "benchmarks.factors",
    "benchmarks.annotations",
)


def format_table(rows: list[dict]) -> str:
    """Rows of dicts as an aligned plain-text table (floats to 4 significant digits)."""
    if not rows:
        return "(no rows)"
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    table = [keys] + [[cell(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(keys))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_standalone(run, description: str | None) -> None:
    """`python -m benchmarks.<name> [--quick]`: one benchmark's table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true")
    print(format_table(run(quick=parser.parse_args().quick)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", choices=[m.split(".")[-1] for m in MODULES], action="append")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {psutil.cpu_count(logical=True)} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {time.strftime('%Y-%m-%d')}"
    )
    for name in MODULES:
        if args.only and name.split(".")[-1] not in args.only:
            continue
        module = importlib.import_module(name)
        print(f"\n== {name.split('.')[-1]}")
        print(format_table(module.run(quick=args.quick)))


if __name__ == "__main__":
    main()
