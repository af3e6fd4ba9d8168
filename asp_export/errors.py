"""Typed errors that the CLI turns into one-line messages.

Leaf module: imports nothing from the package, so every module can raise these.
Exit codes follow the CLI contract: 2 for bad usage or bad input, 1 for a run
that failed or a check that did not pass.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Iterable, Iterator


class AspError(Exception):
    """Base class of every error asp reports to the user without a traceback."""

    exit_code = 1


class UserInputError(AspError):
    """The user gave something asp cannot use (a path, a name, a file, an option)."""

    exit_code = 2


class DataError(UserInputError):
    """A dataset file is missing, corrupt or not in the expected format."""


class ModelLoadError(UserInputError):
    """A model file cannot be loaded safely."""


class RunDirError(UserInputError):
    """A run directory is missing, incomplete, from a newer schema, or would be overwritten."""


class UnsupportedLayerError(AspError):
    """A layer type asp does not know how to rewrite, where guessing would be wrong."""


class KerasInternalsChanged(AspError):
    """A Keras internal asp relies on (asp_export/_keras_private.py) is gone: a Keras newer than tested."""


class TrainingError(AspError):
    """Training diverged (NaN/Inf loss) or failed."""


class PruningFailed(AspError):
    """The pruned model lost what the dense model learnt (its accuracy is at chance)."""


class ExportError(AspError):
    """A converter failed or a written file does not match the Keras model."""


class ProviderError(AspError):
    """A GPU execution provider asked for in strict mode could not run (nothing fell back to the CPU)."""


class CheckFailed(AspError):
    """`asp check` found a regression beyond its budget."""


def one_line(err: BaseException, limit: int = 200) -> str:
    """``Type: message`` of an exception as one line of at most about `limit` characters.

    Only the first non-blank line of the message is kept (TensorFlow puts the gist there and the
    op trace after it), whitespace is collapsed, and a longer text (a library that dumps a whole
    model config into its message) is cut at a word boundary and marked with "...".
    """
    lines = [" ".join(line.split()) for line in str(err).splitlines()]
    text = next((line for line in lines if line), "")
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",:;") + " ..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> UserInputError:
    """Build the 'unknown X' error with the valid names and a did-you-mean hint."""
    valid = sorted(valid)
    hint = difflib.get_close_matches(name, valid, n=1)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    return UserInputError(f"Unknown {kind} {name!r}.{suggestion} Valid: {', '.join(valid)}.")


class HeldLogs:
    """Log records held back while a user's input is being validated (see `held_logs`)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._records: list[logging.LogRecord] = []
        self._saved: tuple[list[logging.Handler], bool] | None = (logger.handlers[:], logger.propagate)
        collect = logging.Handler()
        collect.emit = self._records.append  # type: ignore[method-assign]
        logger.handlers[:] = [collect]
        logger.propagate = False

    def release(self) -> None:
        """The input is good: give back the handlers and emit what was held, in order."""
        self._restore()
        for record in self._records:
            self._logger.callHandlers(record)
        self._records.clear()

    def drop(self) -> None:
        self._restore()
        self._records.clear()

    def _restore(self) -> None:
        if self._saved is not None:
            self._logger.handlers[:], self._logger.propagate = self._saved
            self._saved = None


@contextlib.contextmanager
def held_logs(name: str = "asp_export") -> Iterator[HeldLogs]:
    """Hold the log lines of a block that may still refuse the user's input.

    A bad input gets one line (the CLI contract), not info lines about loading it followed by the
    error: when the block raises a bad-input error (exit code 2) the held lines are dropped. When it
    ends otherwise, or calls `release()` once the input is known to be good, they are emitted in order.
    """
    held = HeldLogs(logging.getLogger(name))
    try:
        yield held
    except BaseException as err:
        if isinstance(err, AspError) and err.exit_code == 2:
            held.drop()
        else:
            held.release()
        raise
    held.release()
