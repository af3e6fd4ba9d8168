"""Atomic file writing: a file either exists complete or not at all.

Leaf module. Every artifact asp produces goes through `atomic_path` or one of
the helpers built on it, so a killed run never leaves a file that looks done.
Also `stderr_fd_captured`: what C++ libraries print to file descriptor 2.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    The temporary file keeps the final suffix (Keras and converters check it).
    On any exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers such as Keras refuse to overwrite; give them a fresh name
    try:
        yield tmp
        if tmp.is_dir():
            if path.exists():
                _remove_tree(path)
            os.replace(tmp, path)
        else:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove_tree(tmp) if tmp.is_dir() else tmp.unlink()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


# The names `atomic_path` gives its temporaries: .STEM.XXXXXXXX.tmp[.SUFFIX] (mkstemp's 8 characters).
_TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.\w+)?")


def remove_stale_temporaries(directory: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Delete the hidden temporaries a SIGKILL left mid-write in `directory` (no clean-up
    code runs on SIGKILL, so only the next run can); returns what was removed."""
    directory = Path(directory)
    candidates = directory.rglob(".*") if recursive else directory.iterdir()
    stale = sorted((p for p in candidates if _TEMPORARY_NAME.fullmatch(p.name)), reverse=True)
    for path in stale:  # deepest first, so a removed directory is never walked into
        if path.is_dir():
            _remove_tree(path)
        else:
            path.unlink(missing_ok=True)
    return stale


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays show up in reports; keep this leaf free of a numpy import
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CapturedText:
    """What `stderr_fd_captured` caught; `text` is filled when the block ends."""

    text: str = ""


@contextlib.contextmanager
def stderr_fd_captured() -> Iterator[CapturedText]:
    """Redirect file descriptor 2 into a temporary file for the block and keep what was written.

    C++ libraries (TensorFlow, onnxruntime) write to fd 2 directly, below `sys.stderr`, so
    `contextlib.redirect_stderr` cannot catch them. Without a real fd 2 nothing is captured.
    """
    captured = CapturedText()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): capture nothing
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")
