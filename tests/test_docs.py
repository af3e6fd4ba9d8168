"""The README and `asp --help` say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from asp_export.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_exactly_the_two_quick_start_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_quick_start_targets_exist_and_ci_runs_the_readme_test_command():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_formats_table_is_generated_from_the_formats_table():
    from asp_export.export.formats import formats_markdown

    assert formats_markdown().strip() in README


def test_every_command_in_the_readme_exists():
    code = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S))
    documented = set(re.findall(r"^asp (\w+)", code, re.M))
    result = CliRunner().invoke(cli, ["--help"])
    listed = set(re.findall(r"^  (\w+) ", result.output, re.M))
    assert documented and documented <= listed


def test_every_linked_doc_exists():
    for link in re.findall(r"\]\((docs/[\w.-]+)\)", README):
        assert (ROOT / link).is_file(), link
