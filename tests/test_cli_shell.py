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
