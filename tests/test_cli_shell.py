"""The `asp` command shell: help, version, and the error contract."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from asp_export.cli import cli


def test_help_lists_the_pipeline_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "asp prune" in result.output


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert result.output.splitlines() == ["Error: No such command 'no-such-command'. (see 'cli --help')"]


def test_a_bad_option_value_is_one_line_naming_the_valid_ones_and_the_help():
    """Not Click's usage block, hint and blank line: one line, like every other bad input."""
    result = CliRunner().invoke(cli, ["export", "somewhere", "--format", "caffe"])
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("Error: Invalid value for '--format'") and "Valid: all, onnx" in line, line
    assert line.endswith("(see 'cli export --help')"), line


def test_held_logs_drop_on_bad_input_and_release_in_order_otherwise(caplog):
    import logging

    import pytest

    from asp_export.errors import TrainingError, UserInputError, held_logs

    log = logging.getLogger("asp_export.some.stage")
    root = logging.getLogger("asp_export")
    before = (root.handlers[:], root.propagate)
    with caplog.at_level(logging.INFO, logger="asp_export"):
        with pytest.raises(UserInputError), held_logs():
            log.info("loaded the data")
            raise UserInputError("bad labels")
        assert caplog.messages == []  # the error will be the one line
        with pytest.raises(TrainingError), held_logs():
            log.info("first")
            log.warning("second")
            raise TrainingError("diverged")  # a run failure: what led to it is shown
        assert caplog.messages == ["first", "second"]
        caplog.clear()
        with held_logs() as held:
            log.info("loaded")
            assert caplog.messages == []
            held.release()  # the input is good: what follows is live
            assert caplog.messages == ["loaded"]
            log.info("epoch 1")
            assert caplog.messages == ["loaded", "epoch 1"]
    assert (root.handlers, root.propagate) == before  # handlers and propagation given back


def test_help_does_not_import_tensorflow():
    code = (
        "import sys; from asp_export.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules, 'asp --help imported TensorFlow'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _failing_command(message: str):
    import click

    @click.command("boom")
    def boom():
        raise ValueError(message)

    return boom


def test_an_unexpected_failure_is_one_bounded_line_and_verbose_shows_the_traceback(monkeypatch):
    # what Keras said when asked to rebuild a Sequential model as functional: the whole config
    config = repr(
        {"layers": [{"class_name": "Conv2D", "config": {"filters": i, "name": f"c{i}"}} for i in range(99)]}
    )
    message = f"Unrecognized keyword arguments passed to Model: {config}\n\nand a second line"
    monkeypatch.setitem(cli.commands, "boom", _failing_command(message))

    result = CliRunner().invoke(cli, ["boom"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert len(lines[0]) <= 320, f"{len(lines[0])} characters"
    assert lines[0].startswith("Error: unexpected failure: ValueError: Unrecognized keyword arguments")
    assert "--verbose" in lines[0] and "second line" not in lines[0]
    assert "Traceback" not in result.output

    verbose = CliRunner().invoke(cli, ["--verbose", "boom"])
    assert isinstance(verbose.exception, ValueError) and str(verbose.exception) == message
