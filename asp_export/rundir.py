"""The run directory: the contract between prune, export, bench and check.

Every stage reads only what earlier stages wrote here, under fixed file names,
so any stage can be re-run alone and a run made on a GPU box can be exported
and benchmarked elsewhere. Code gets paths from `RunDir`, never by joining
names by hand. Paths stored inside JSON files are relative to the run root.

    runs/NAME/
      config.json            resolved options, seed, versions, devices
      dense.keras            the model as trained (GASL)
      pruned.keras           the surgically rebuilt, smaller model
      report.json/.md        accuracy, params, FLOPs, per-layer groups, plan
      state.json             training progress, for --resume
      checkpoints/           one checkpoint per epoch
      logs/                  TensorBoard
      export/manifest.json   written by `asp export`
      bench/bench.json       written by `asp bench`
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asp_export.errors import RunDirError

SCHEMA_VERSION = 1
MODEL_KINDS = ("dense", "pruned")


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # fixed names -------------------------------------------------------------
    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def state_json(self) -> Path:
        return self.root / "state.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def manifest_json(self) -> Path:
        return self.export_dir / "manifest.json"

    @property
    def bench_dir(self) -> Path:
        return self.root / "bench"

    @property
    def bench_json(self) -> Path:
        return self.bench_dir / "bench.json"

    def model_path(self, kind: str) -> Path:
        if kind not in MODEL_KINDS:
            raise RunDirError(f"Unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}.")
        return self.root / f"{kind}.keras"

    def relative(self, path: str | Path) -> str:
        """Path as stored in JSON: relative to the run root when inside it."""
        path = Path(path)
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def resolve(self, stored: str) -> Path:
        """Inverse of `relative`."""
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    # lifecycle ---------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, *, force: bool = False, dry_run: bool = False) -> RunDir:
        """Prepare a fresh run directory; refuse to overwrite one unless `force`.

        With `dry_run` only the refusal checks run and nothing is touched.
        """
        run = cls(root)
        if run.root.exists() and not run.root.is_dir():
            raise RunDirError(f"{run.root} exists and is not a directory; choose another --out.")
        if run.root.exists() and any(run.root.iterdir()):
            if not force:
                raise RunDirError(
                    f"Run directory {run.root} already exists and is not empty; "
                    "pass --force to replace it, --resume to continue it, or choose another --out."
                )
            if not run.is_run_dir():
                raise RunDirError(
                    f"{run.root} is not empty and is not an asp run directory; --force only replaces run "
                    "directories. Choose another --out."
                )
            if dry_run:
                return run
            shutil.rmtree(run.root)
        if dry_run:
            return run
        run.root.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, root: str | Path) -> RunDir:
        """Open an existing run directory written by `asp prune`."""
        run = cls(root)
        if not run.root.is_dir():
            raise RunDirError(
                f"Run directory {run.root} does not exist; create one with `asp prune --out {run.root}`."
            )
        if not run.config_json.is_file():
            raise RunDirError(
                f"{run.root} is not an asp run directory (no config.json); run `asp prune` first."
            )
        read_json(run.config_json)  # validates schema
        return run

    def is_run_dir(self) -> bool:
        return self.config_json.is_file()


def read_json(path: str | Path, *, what: str | None = None) -> dict[str, Any]:
    """Read an asp JSON file, checking that it parses and has a schema we understand."""
    path = Path(path)
    what = what or path.name
    if not path.is_file():
        raise RunDirError(f"{what} not found at {path}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(
            f"{path} is not valid JSON ({err}); re-create it or restore it from version control."
        ) from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} must hold a JSON object, found {type(data).__name__}.")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise RunDirError(f"{path} has no integer schema_version; it was not written by asp.")
    if version > SCHEMA_VERSION:
        raise RunDirError(
            f"{path} has schema_version {version}, newer than this asp understands "
            f"({SCHEMA_VERSION}); upgrade asp."
        )
    return data
