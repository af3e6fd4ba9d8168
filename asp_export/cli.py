"""The `asp` command line: a thin shell over the library.

Every subcommand lives in its own module under `asp_export.commands` and imports
the heavy libraries (TensorFlow, onnxruntime) inside its body, so `asp --help`
is instant and `asp bench` on ONNX files never imports TensorFlow.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

import click

from asp_export.errors import AspError, one_line
from asp_export.versions import asp_version

# TensorFlow's C++ logging drowns the useful output; users can still override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("asp_export")

# Subcommands that always run TensorFlow; bench and check must work without it.
_TENSORFLOW_COMMANDS = {"prune", "shrink", "export", "models", "sweep"}


class _AspClickError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AspGroup(click.Group):
    """Turns library errors into one-line messages with the contract's exit codes."""

    def invoke(self, ctx: click.Context):
        verbose = bool(ctx.params.get("verbose"))
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            # one line, like every other bad input: what is wrong (a bad value names the valid ones) and
            # where to read more, instead of Click's usage block, hint and blank line around it
            where = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
            raise _AspClickError(f"{err.format_message()}{where}", err.exit_code) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except AspError as err:
            if verbose:
                raise
            raise _AspClickError(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            raise _AspClickError(
                "Interrupted; finished artifacts are kept, partial ones were discarded.", 130
            ) from None
        except OSError as err:
            if verbose:
                raise
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            bad_path = (errno.EACCES, errno.EROFS, errno.ENOENT, errno.EISDIR, errno.ENOTDIR)
            code = 2 if err.errno in bad_path else 1
            raise _AspClickError(f"{err.strerror or err}{where}.", code) from None
        except Exception as err:  # noqa: BLE001 - the CLI never shows a traceback without --verbose
            if verbose:
                raise
            # one bounded line whatever the library put in its message; the rest is behind --verbose
            raise _AspClickError(
                f"unexpected failure: {one_line(err)} (run `asp --verbose ...` for the traceback)", 1
            ) from None


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s")
    )
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


@click.group(cls=AspGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--verbose", "-v", is_flag=True, help="Debug logging and full tracebacks on errors.")
@click.version_option(asp_version(), prog_name="asp")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """asp: prune a Keras CNN with attention-guided group sparsity (GASL), rebuild it
    smaller, export it (ONNX, TFLite), benchmark it and guard it in CI.

    \b
    Data flow:  asp prune -> runs/NAME/ -> asp export -> asp bench -> asp check
    Quick start: make demo  (see README.md), or: asp prune --model gasl-mnist --data digits --out runs/NAME
    """
    _configure_logging(verbose)
    if ctx.invoked_subcommand in _TENSORFLOW_COMMANDS and not verbose and "--help" not in sys.argv:
        from asp_export._tf import import_tensorflow_quietly

        import_tensorflow_quietly()


def _register_commands() -> None:
    from asp_export.commands import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_register_commands()


def main() -> None:
    cli(prog_name="asp")


if __name__ == "__main__":
    main()
