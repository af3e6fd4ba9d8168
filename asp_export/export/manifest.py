"""export/manifest.json: the index of an export directory, written last and atomically.

`asp bench` and `asp check` read only this file to find what to run, so it must
never lie: it is written after every file is written and checked, through an
atomic rename, and each entry carries the file's sha256 so a reader can tell a
file that changed since. Paths are relative to the directory that holds the
export directory (the run root for `RUN/export`), as everywhere in asp.

Schema (version 1):

    {"schema_version": 1, "asp_version": "...", "source": "<run dir or .keras path>",
     "data": "test split of digits" | "synthetic", "created_utc": "...",
     "versions": {...}, "options": {...}, "all_passed": true,
     "files": [{"model": "dense"|"pruned", "format", "precision", "path", "size_bytes", "sha256",
                "batch": "dynamic"|N, "layout": "NHWC"|"NCHW", "input": {name, shape, dtype}, "output": {...},
                "params", "flops", "source", "export_seconds",
                [ONNX: "opset", "simplified", "graph": {nodes, ops, [mobile: {nnapi, coreml}]}],
                "parity": {max_abs_diff, max_rel_diff, top1_agreement, n_samples, data, passed,
                           tolerance, failures, reference: {device, tensor_float_32},
                           [keras_accuracy, file_accuracy, accuracy_drop]}}],
     "failures": [{"model", "format", "precision", "error"}]}
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asp_export._io import sha256_of, write_json_atomic
from asp_export.errors import RunDirError
from asp_export.rundir import SCHEMA_VERSION, read_json
from asp_export.versions import asp_version, package_versions

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
ENTRY_FIELDS = ("model", "format", "precision", "path", "size_bytes", "sha256", "parity")
PARITY_FIELDS = ("max_abs_diff", "max_rel_diff", "top1_agreement", "n_samples", "passed")


def artifact_size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory artifact (SavedModel)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def artifact_sha256(path: Path) -> str:
    """sha256 of a file; for a directory, of its sorted relative paths and their files' sha256."""
    if not path.is_dir():
        return sha256_of(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256_of(file).encode() + b"\n")
    return digest.hexdigest()


def relative_path(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(path.resolve())


def build_manifest(
    *,
    source: str,
    data: str,
    entries: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the manifest dict (no I/O)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "asp_version": asp_version(),
        "source": source,
        "data": data,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": package_versions(),
        "options": options,
        "all_passed": not failures and all(e["parity"]["passed"] for e in entries),
        "files": entries,
        "failures": failures,
    }


def merge_previous(manifest_path: Path, root: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries of an earlier manifest to keep: files not re-written now that are still unchanged on disk.

    Exporting only tflite after an onnx export keeps the onnx entries listed; an
    entry whose file was deleted or edited since is dropped (with a warning), so
    the manifest never vouches for a file it did not check.
    """
    if not manifest_path.is_file():
        return []
    try:
        previous = read_manifest(manifest_path)
    except RunDirError as err:
        log.warning("ignoring the previous manifest: %s", err)
        return []
    written = {e["path"] for e in entries}
    kept = []
    for entry in previous["files"]:
        if entry["path"] in written:
            continue
        file = root / entry["path"]
        if file.exists() and artifact_sha256(file) == entry["sha256"]:
            kept.append(entry)
        else:
            log.warning(
                "dropping %s from the manifest: the file is missing or changed since it was checked",
                entry["path"],
            )
    return kept


def retract(manifest_path: Path, paths: set[str]) -> None:
    """Drop entries for `paths` from an existing manifest before those files are replaced.

    Called before `--force` rewrites files, so an export killed half-way leaves a
    manifest that lists only files it still describes correctly.
    """
    if not manifest_path.is_file():
        return
    try:
        previous = read_manifest(manifest_path)
    except RunDirError:
        return  # merge_previous warns about it when the new manifest is written
    kept = [e for e in previous["files"] if e["path"] not in paths]
    if len(kept) != len(previous["files"]):
        previous["files"] = kept
        previous["all_passed"] = not previous.get("failures") and all(e["parity"]["passed"] for e in kept)
        write_json_atomic(manifest_path, previous)


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    validate(manifest, path)
    write_json_atomic(path, manifest)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate a manifest.json.

    Raises:
        RunDirError: the file is missing, not JSON, from a newer schema or missing required fields.
    """
    path = Path(path)
    manifest = read_json(path, what="export manifest")
    validate(manifest, path)
    return manifest


def validate(manifest: dict[str, Any], path: Path | str = MANIFEST_NAME) -> None:
    """Check the fields other stages rely on; raise RunDirError naming the first missing one."""
    for key in ("schema_version", "asp_version", "source", "versions", "files"):
        if key not in manifest:
            raise RunDirError(f"{path} has no {key!r}; re-run `asp export`.")
    if not isinstance(manifest["files"], list):
        raise RunDirError(f"{path}: 'files' must be a list; re-run `asp export`.")
    for i, entry in enumerate(manifest["files"]):
        missing = [k for k in ENTRY_FIELDS if k not in entry]
        missing += [f"parity.{k}" for k in PARITY_FIELDS if k not in entry.get("parity", {})]
        if missing:
            raise RunDirError(f"{path}: files[{i}] lacks {', '.join(missing)}; re-run `asp export`.")
