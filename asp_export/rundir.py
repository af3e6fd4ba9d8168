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
    runs/.NAME.lock          held while a process writes runs/NAME (`run_lock`)

One process at a time owns a run directory: `asp prune`, `asp export`, `asp bench`
and `asp sweep` hold `run_lock` while they read and write it, and `replacing`
lets `--force` put a new run in place of an old one only once it is complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asp_export.errors import RunDirError

try:
    import fcntl
except ImportError:  # Windows: msvcrt byte-range locks instead (see _try_lock)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODEL_KINDS = ("dense", "pruned")
# The model file formats a run directory holds: format key -> file-name ending (an ending without a
# dot names a directory). Export writes them (export.FORMATS), bench recognises them (detect_format).
ARTIFACT_SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "tflite": ".tflite", "saved_model": "_saved_model"}


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
        return self.root / f"{kind}{ARTIFACT_SUFFIXES['keras']}"

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
        """Check that `root` may receive a new run, and create it if it is new or empty.

        A non-empty `root` passes only with `force`, and only if it is a run directory; it
        is never deleted here (`replacing` writes the new run beside it and swaps it in
        once complete). With `dry_run` only the checks run and nothing is touched.
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
            return run
        if not dry_run:
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


# --- ownership: one process at a time ------------------------------------------------------------


def lock_path(root: str | Path) -> Path:
    """The lock file of run directory `root`: a hidden sibling, so it names the directory
    whatever happens to it (created, replaced by `--force`, deleted)."""
    root = Path(root).resolve()
    return root.parent / f".{root.name}.lock"


_HELD: dict[Path, list[int]] = {}  # lock file -> [fd, depth]: re-entrant within one process
# Windows has no flock; one byte far past the owner record is locked, so others can still read it.
_WINDOWS_LOCK_OFFSET = 1 << 20


@contextlib.contextmanager
def run_lock(root: str | Path | None, command: str) -> Iterator[None]:
    """Own run directory `root` for the block: an exclusive OS lock on `lock_path(root)`.

    The lock file records the owner (command, pid, host, start time). The kernel drops the
    lock when its process dies, however it dies, so a lock left by a killed run is taken over
    (and named in a warning); the file is removed on a clean exit. Re-entrant within a process
    (a sweep holds its cells' locks while `run_prune` takes them again). `root` None: no lock.

    Raises:
        RunDirError: another process owns `root` (exit 2, naming it), or the lock was left
            by a process on another host, whose liveness cannot be checked from here.
    """
    if root is None:
        yield
        return
    path = lock_path(root)
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    made = _make_parents(path.parent, Path(root))
    try:
        fd = _acquire(path, Path(root), command)
        _HELD[path] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[path]
            _release(fd, path)
    finally:
        for directory in made:  # a refused or failed command leaves no empty folders behind
            with contextlib.suppress(OSError):
                directory.rmdir()


def _make_parents(parent: Path, root: Path) -> list[Path]:
    """Create the folder the lock file lives in; return the ones created, deepest first."""
    missing = [d for d in (parent, *parent.parents) if not d.exists()]
    blocked = next((d for d in (parent, *parent.parents) if d.exists() and not d.is_dir()), None)
    if blocked is not None:
        raise RunDirError(f"Cannot create {root}: {blocked} is a file, not a folder; choose another path.")
    parent.mkdir(parents=True, exist_ok=True)
    return missing


def _acquire(path: Path, root: Path, command: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            owner = _read_owner(fd)
            os.close(fd)
            who = _describe(owner, path) if owner else f"another asp process (lock {path})"
            raise RunDirError(f"{root} is in use by {who}; wait for it to finish, or use another directory.")
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
            break
        os.close(fd)  # its owner removed the file as we opened it: lock the new one
    previous = _read_owner(fd)
    if previous:
        if previous.get("host") != socket.gethostname():
            os.close(fd)
            raise RunDirError(
                f"{root} was locked by {_describe(previous, path)}, on another host, so asp cannot tell "
                f"whether it still runs; if it does not, delete {path} and retry."
            )
        log.warning(
            "Took over the lock of %s left by %s, which is no longer running (killed?).",
            root,
            _describe(previous, path),
        )
    owner = {
        "command": command,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(owner) + "\n").encode("utf-8"))
    return fd


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False when another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            import msvcrt

            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # BlockingIOError on POSIX, PermissionError on Windows
        return False
    return True


def _release(fd: int, path: Path) -> None:
    if fcntl is not None:
        path.unlink(missing_ok=True)  # while still locked, so nobody locks a file about to vanish
        os.close(fd)
        return
    import msvcrt  # pragma: no cover - Windows cannot delete an open file: unlock, close, then delete

    os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    os.close(fd)
    with contextlib.suppress(OSError):
        path.unlink()


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        owner = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any], path: Path) -> str:
    return (
        f"{owner.get('command', 'asp')} (pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, "
        f"started {owner.get('started', '?')}; lock {path})"
    )


# --- replacing a run only by a complete one ----------------------------------------------------


@contextlib.contextmanager
def replacing(root: str | Path, *, force: bool = False) -> Iterator[RunDir]:
    """The directory a new run writes into; call under `run_lock(root)`.

    A new or empty `root` is yielded as is (not created yet: the caller creates it once its
    input checks passed, and a killed run there can be resumed). An existing run with
    `force` stays untouched while the new one is written into a hidden sibling
    (`.NAME.XXXXXXXX.tmp`); only when the block completes does the sibling take its place,
    and on any error the sibling is deleted and the old run is all there is. Without
    `force` an existing run is refused, and so is any non-empty directory that is not a run.
    """
    _recover_swap(Path(root))
    final = RunDir.create(root, force=force, dry_run=True)
    if not (final.root.is_dir() and any(final.root.iterdir())):
        yield final
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{final.root.name}.", suffix=".tmp", dir=final.root.parent))
    try:
        yield RunDir(staging)
        aside = staging.with_name(f"{staging.name[: -len('.tmp')]}.old")
        os.replace(final.root, aside)
        os.replace(staging, final.root)
        shutil.rmtree(aside)
        log.info("Replaced %s with the new run (--force).", final.root)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _recover_swap(root: Path) -> None:
    """Undo what a kill inside `replacing` left: a partial new run (`.NAME.XXXXXXXX.tmp`) is
    deleted; an old run moved aside (`.NAME.XXXXXXXX.old`) is put back if `root` is gone,
    else deleted (the swap had finished)."""
    if not root.parent.is_dir():
        return
    leftover = re.compile(rf"\.{re.escape(root.name)}\.[a-z0-9_]{{8}}\.(tmp|old)")
    for path in sorted(p for p in root.parent.iterdir() if leftover.fullmatch(p.name) and p.is_dir()):
        if path.suffix == ".tmp":
            log.info("Removed %s (a --force run killed before it finished)", path)
            shutil.rmtree(path)
        elif root.exists():
            shutil.rmtree(path)
        else:
            os.replace(path, root)
            log.warning("Restored %s: a --force run was killed while replacing it.", root)
