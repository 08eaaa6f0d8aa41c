"""Component spec files: SNP<TAB>component text, JSON and NPZ (never pickles).

Formats (documented in docs/component_specs.md):
    text  one `SNP component` pair per line (tab or spaces), plain, gzip or zstd; blank lines
          and lines starting with '#' are skipped; an optional header line whose first field
          is not a store variant and is a header word (`SNP component`, `ID group`, ...);
          a SNP may appear under several components (overlap).
    JSON  {"components": [{"name": str, "variant_indices": [int, ...],
                           "annotation": {...} (optional), "store": int (optional, default 0)}]}
    NPZ   arrays `names` (str, G), `offsets` (int, G + 1), `indices` (int, concatenated
          variant indices: component g is indices[offsets[g]:offsets[g+1]]), optional `stores`
          (int, G). Loaded with allow_pickle=False.
Every error is a ComponentSpecError whose one-line message names the file and, where there
is one, the line or component.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from dreml.components.model import Components
from dreml.errors import ComponentSpecError
from dreml.store import Store
from dreml.textio import VARIANT_HEADER_WORDS, numbered_lines, open_text

_JSON_FIELDS = {"name", "variant_indices", "annotation", "store"}


def read_tsv(path: str | Path, store: Store) -> Components:
    """Components from a `SNP<TAB>component` file, SNP ids looked up in `store.variant_id`."""
    path = Path(path)
    ids = store.variant_id
    index_of: dict[str, int] = {}
    ambiguous: set[str] = set()
    for j, v in enumerate(ids):
        if v in index_of:
            ambiguous.add(v)
        index_of.setdefault(v, j)
    members: dict[str, list[int]] = {}
    first = True
    for lineno, line in numbered_lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if first and fields[0] not in index_of and fields[0].lower() in VARIANT_HEADER_WORDS:
            first = False
            continue  # a header line such as 'SNP component'
        first = False
        if len(fields) != 2:
            raise ComponentSpecError(
                f"{path}:{lineno}: expected 'SNP component' (two fields, tab or space separated), got {line!r}"
            )
        snp, name = fields
        if snp not in index_of:
            raise ComponentSpecError(f"{path}:{lineno}: unknown SNP id {snp!r} (not in store {store.path})")
        if snp in ambiguous:
            raise ComponentSpecError(f"{path}:{lineno}: SNP id {snp!r} occurs more than once in store {store.path}")
        idx = members.setdefault(name, [])
        if index_of[snp] in idx:
            raise ComponentSpecError(f"{path}:{lineno}: SNP {snp!r} listed twice in component '{name}'")
        idx.append(index_of[snp])
    if not members:
        raise ComponentSpecError(f"{path}: no components (file has no SNP<TAB>component lines)")
    return Components(tuple(members), tuple(np.array(v) for v in members.values()), source=str(path))


def read_json(path: str | Path) -> Components:
    """Components from a JSON spec (format in the module docstring)."""
    path = Path(path)
    try:
        with open_text(path) as f:
            doc = json.loads(f.read())
    except json.JSONDecodeError as exc:
        raise ComponentSpecError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("components"), list):
        raise ComponentSpecError(f"{path}: expected an object with a 'components' list")
    names, indices, stores, annotations = [], [], [], []
    for i, entry in enumerate(doc["components"]):
        where = f"{path}: component #{i + 1}"
        if not isinstance(entry, dict):
            raise ComponentSpecError(f"{where}: expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - _JSON_FIELDS)
        if unknown:
            raise ComponentSpecError(
                f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_JSON_FIELDS))})"
            )
        for required in ("name", "variant_indices"):
            if required not in entry:
                raise ComponentSpecError(f"{where}: missing field '{required}'")
        name, idx = entry["name"], entry["variant_indices"]
        if not isinstance(name, str):
            raise ComponentSpecError(f"{where}: 'name' must be a string")
        where = f"{path}: component '{name}'"
        if not isinstance(idx, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in idx):
            raise ComponentSpecError(f"{where}: 'variant_indices' must be a list of integers")
        annotation = entry.get("annotation", {})
        if not isinstance(annotation, dict):
            raise ComponentSpecError(f"{where}: 'annotation' must be an object")
        store = entry.get("store", 0)
        if not isinstance(store, int) or isinstance(store, bool):
            raise ComponentSpecError(f"{where}: 'store' must be an integer")
        names.append(name)
        indices.append(np.array(idx, dtype=np.int64))
        stores.append(store)
        annotations.append(annotation)
    return Components(tuple(names), tuple(indices), tuple(stores), tuple(annotations), source=str(path))


def read_npz(path: str | Path) -> Components:
    """Components from an NPZ spec (format in the module docstring); pickles are refused."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ComponentSpecError(f"{path}: not a readable NPZ spec without pickled objects ({exc})") from exc
    for required in ("names", "offsets", "indices"):
        if required not in arrays:
            raise ComponentSpecError(f"{path}: missing array '{required}'")
    names, offsets, indices = arrays["names"], arrays["offsets"], arrays["indices"]
    if names.dtype.kind != "U" or names.ndim != 1:
        raise ComponentSpecError(f"{path}: 'names' must be a 1-d string array")
    G = names.shape[0]
    if (
        offsets.shape != (G + 1,)
        or offsets.dtype.kind not in "iu"
        or offsets[0] != 0
        or np.any(np.diff(offsets) < 0)
        or offsets[-1] != indices.shape[0]
    ):
        raise ComponentSpecError(f"{path}: 'offsets' must be {G + 1} non-decreasing integers from 0 to len(indices)")
    stores = arrays.get("stores", np.zeros(G, dtype=np.int64))
    if stores.shape != (G,) or stores.dtype.kind not in "iu":
        raise ComponentSpecError(f"{path}: 'stores' must hold {G} integers")
    return Components(
        tuple(str(n) for n in names),
        tuple(indices[offsets[g] : offsets[g + 1]] for g in range(G)),
        tuple(int(s) for s in stores),
        source=str(path),
    )


def load_components(path: str | Path, store: Store | None = None) -> Components:
    """Read a spec by its suffix: .json (.json.gz, .json.zst), .npz, otherwise SNP-component
    text (needs `store`)."""
    path = Path(path)
    if not path.is_file():
        raise ComponentSpecError(f"{path}: no such component spec file")
    if path.name.removesuffix(".gz").removesuffix(".zst").endswith(".json"):
        return read_json(path)
    if path.suffix == ".npz":
        return read_npz(path)
    if store is None:
        raise ComponentSpecError(f"{path}: a SNP<TAB>component file needs the store to look SNP ids up")
    return read_tsv(path, store)


def write_json(components: Components, path: str | Path) -> None:
    """Write `components` as a JSON spec that `read_json` reads back unchanged."""
    doc = {
        "components": [
            {"name": n, "variant_indices": idx.tolist(), "annotation": a, "store": s}
            for n, idx, a, s in zip(components.names, components.variant_indices, components.annotations, components.stores)
        ]
    }
    Path(path).write_text(json.dumps(doc, indent=1))


def write_npz(components: Components, path: str | Path) -> None:
    """Write `components` as an NPZ spec (annotations are not kept; use JSON for those)."""
    np.savez(
        path,
        names=np.array(components.names, dtype=str),
        offsets=np.concatenate([[0], np.cumsum(components.m)]).astype(np.int64),
        indices=np.concatenate(components.variant_indices).astype(np.int64),
        stores=np.array(components.stores, dtype=np.int64),
    )
