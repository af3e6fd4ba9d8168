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
