"""What to time: the exported files of a run directory (or the given files), one Target each, with FLOPs.

A run's manifest says which exports failed parity (skipped, said so); report.json and the ONNX
graph give the FLOPs that the bench rows set against the measured speedup.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asp_export.bench.config import ROLES, BenchConfig
from asp_export.bench.runtimes import detect_format, runtime_for_format
from asp_export.errors import RunDirError, UserInputError
from asp_export.rundir import RunDir, read_json

log = logging.getLogger(__name__)


_PRECISION_TOKENS = ("int8", "fp16", "fp32", "float16", "float32")


@dataclass(frozen=True)
class Target:
    """One model file to benchmark. `role` (dense|pruned) decides pairing; None = unpaired.

    `parity_failed`: the export manifest says this file failed parity (it is timed, and marked).
    """

    model: str
    role: str | None
    format: str
    precision: str | None
    path: Path
    flops: int | None = None
    parity_failed: bool = False

    @property
    def runtime(self) -> str | None:
        return runtime_for_format(self.format)


def resolve_targets(config: BenchConfig) -> tuple[list[Target], Path, str]:
    """Turn the CLI inputs into Targets, the default output dir and a description of the source.

    Raises:
        UserInputError: a path does not exist, is of an unknown type, or a run dir has no export.
    """
    runtimes = config.selected_runtimes
    first = Path(config.inputs[0])
    if run_dir_of(config) is not None:
        targets = _run_dir_targets(RunDir(first), runtimes)
        default_out = RunDir(first).bench_dir
        source = str(first)
    else:
        targets = _file_targets([Path(p) for p in config.inputs])
        default_out = first.parent / "bench"
        source = ", ".join(str(p) for p in config.inputs)
    chosen = [t for t in targets if t.runtime in runtimes]
    if not chosen:
        found = sorted({t.format for t in targets})
        raise UserInputError(
            f"Nothing to benchmark: the inputs hold formats {found or 'none'}, none of which the selected "
            f"runtimes ({', '.join(runtimes)}) read. Choose --runtime for those formats."
        )
    return chosen, default_out, source


def run_dir_of(config: BenchConfig) -> Path | None:
    """The run directory benchmarked (its export/ read, its bench/ written), if the input is one."""
    first = Path(config.inputs[0])
    if len(config.inputs) == 1 and first.is_dir() and detect_format(first) is None:
        return first
    return None


def _run_dir_targets(run: RunDir, runtimes: list[str]) -> list[Target]:
    flops = _report_flops(run)
    targets: list[Target] = []
    needs_export = any(name != "tensorflow" for name in runtimes)
    if run.manifest_json.is_file():
        manifest = read_json(run.manifest_json, what="export manifest")
        for entry in manifest.get("files", []):
            try:
                role, fmt, rel = entry["model"], entry["format"], entry["path"]
            except KeyError as err:
                raise RunDirError(
                    f"{run.manifest_json}: a file entry lacks {err}; re-run `asp export`."
                ) from None
            path = run.resolve(rel)
            targets.append(
                Target(
                    model=role,
                    role=role if role in ROLES else None,
                    format=fmt,
                    precision=entry.get("precision"),
                    path=path,
                    flops=flops.get(role)
                    or _entry_flops(entry)
                    or (_onnx_flops(path) if fmt == "onnx" else None),
                    parity_failed=_parity_failed(entry),
                )
            )
    elif needs_export:
        if not run.root.is_dir():
            raise RunDirError(f"{run.root} does not exist; give a run directory or model files.")
        raise RunDirError(
            f"{run.root} has no export yet ({run.manifest_json} not found); "
            f"run `asp export {run.root}` first."
        )
    if "tensorflow" in runtimes:
        for role in ROLES:
            path = run.model_path(role)
            if path.is_file():
                targets.append(Target(role, role, "keras", "fp32", path, flops.get(role)))
    return targets


def _report_flops(run: RunDir) -> dict[str, int]:
    if not run.report_json.is_file():
        return {}
    report = read_json(run.report_json, what="report.json")
    found = {}
    for role in ROLES:
        value = (report.get(role) or {}).get("flops")
        if isinstance(value, (int, float)) and value > 0:
            found[role] = int(value)
    return found


def _parity_failed(entry: dict[str, Any]) -> bool:
    parity = entry.get("parity")
    return isinstance(parity, dict) and parity.get("passed") is False


def _manifest_says_failed(path: Path) -> bool:
    """True when the export manifest beside an explicitly named file lists it as failing parity."""
    manifest = path.parent / "manifest.json"
    try:
        files = read_json(manifest, what="export manifest").get("files", []) if manifest.is_file() else []
    except RunDirError:
        return False
    root = manifest.parent.parent  # manifest paths are relative to the export directory's parent
    return any(
        isinstance(e, dict) and (root / str(e.get("path"))).resolve() == path.resolve() and _parity_failed(e)
        for e in files
    )


def _entry_flops(entry: dict[str, Any]) -> int | None:
    value = entry.get("flops")  # asp export records the Keras model's count per file
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def _onnx_flops(path: Path) -> int | None:
    from asp_export.bench.onnx_flops import onnx_flops

    return onnx_flops(path)


def _file_targets(paths: Sequence[Path]) -> list[Target]:
    raw = []
    for path in paths:
        if not path.exists():
            raise UserInputError(f"{path} does not exist; give a run directory or existing model files.")
        fmt = detect_format(path)
        if fmt is None:
            raise UserInputError(
                f"{path} is not a model file asp bench can run; expected .onnx, .tflite, .keras or a "
                "SavedModel directory (or a run directory with an export)."
            )
        stem = path.name.lower()
        precision = next((tok for tok in _PRECISION_TOKENS if tok in stem), None)
        role = "pruned" if "pruned" in stem else "dense" if "dense" in stem else None
        raw.append([path, fmt, precision, role])
    # Two files of one format and no dense/pruned in their names: first = reference, second = candidate.
    by_kind: dict[tuple[str, str | None], list[list[Any]]] = {}
    for item in raw:
        by_kind.setdefault((item[1], item[2]), []).append(item)
    for items in by_kind.values():
        if len(items) == 2 and all(item[3] is None for item in items):
            items[0][3], items[1][3] = "dense", "pruned"
            log.info(
                "pairing %s (as dense) with %s (as pruned), in the order given", items[0][0], items[1][0]
            )
    targets = []
    for path, fmt, precision, role in raw:
        flops = _onnx_flops(path) if fmt == "onnx" else None
        targets.append(Target(_label(path), role, fmt, precision, path, flops, _manifest_says_failed(path)))
    return targets


def _label(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name
