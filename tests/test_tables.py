"""asp_export.tables: the one renderer of the tables users read (terminal text and Markdown)."""

from __future__ import annotations

import re

import pytest

from asp_export import tables
from asp_export.bench.report import to_markdown as bench_markdown
from asp_export.bench.report import to_terminal
from asp_export.tables import columns, to_markdown, to_text

COLS = columns("name", "ms", "note", right=("ms",))


def test_text_aligns_numbers_right_text_left_and_leaves_the_last_column_unpadded():
    text = to_text(COLS, [("a", "1.5", "ok"), ("longer", "12.25", "a long message")])
    assert text.splitlines() == [
        "name       ms  note",
        "------  -----  --------------",
        "a         1.5  ok",
        "longer  12.25  a long message",
    ]


def test_markdown_marks_right_columns_and_escapes_pipes_in_cells():
    md = to_markdown(COLS, [("a|b", "1", "line\nbreak")]).splitlines()
    assert md == ["| name | ms | note |", "| --- | ---: | --- |", "| a\\|b | 1 | line break |"]


def test_a_row_with_the_wrong_number_of_cells_and_an_unknown_right_column_are_refused():
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        to_text(COLS, [("a", "1")])
    with pytest.raises(ValueError, match="not among"):
        columns("a", right=("b",))


def _bench_rows() -> dict:
    row = {
        "runtime": "onnxruntime",
        "provider": "CPUExecutionProvider",
        "format": "onnx",
        "precision": "fp32",
        "fallback": False,
    }
    rows = [
        {**row, "model": "dense", "batch": 1, "status": "ok", "p50_ms": 1.234, "p90_ms": 1.5, "p99_ms": 2.0,
         "mean_ms": 1.3, "std_ms": 0.1, "min_ms": 1.1, "throughput": 810.4, "n_iter": 30,
         "dispersion_high": False, "capped": False},
        {**row, "model": "pruned", "batch": 32, "status": "run_failed", "error": "boom"},
    ]  # fmt: skip
    settings = {"threads": 1, "provider": "cpu", "warmup": 1, "min_iterations": 3, "min_time_s": 0}
    settings.update(max_time_s=1, block=1)
    return {"source": "t", "created_utc": "now", "machine": {"cpu": "test", "cpu_count": 2}, "versions": {},
            "settings": settings, "pairs": [], "rows": rows}  # fmt: skip


def test_bench_terminal_and_markdown_show_the_same_cells_through_the_one_renderer():
    data = _bench_rows()
    terminal = to_terminal(data).splitlines()
    header = terminal[0].split()
    assert set(terminal[1]) == {"-", " "}  # the renderer's rule, no box drawing
    text_cells = [re.split(r"\s{2,}", line.strip()) for line in terminal[2:4]]
    md = bench_markdown(data).splitlines()
    start = md.index("## Rows") + 2
    md_header = [c.strip() for c in md[start].strip("|").split("|")]
    md_cells = [[c.strip() for c in line.strip("|").split("|")] for line in md[start + 2 : start + 4]]
    picked = [[cells[md_header.index(h)] for h in header] for cells in md_cells]
    assert picked == text_cells
    assert text_cells[0][header.index("p50_ms")] == "1.234" and text_cells[1][header.index("batch")] == "32"
    # figures right-aligned in both: the Markdown rule marks them, the text pads them on the left
    rule = [c.strip() for c in md[start + 1].strip("|").split("|")]
    assert [rule[md_header.index(h)] for h in ("model", "batch", "p50_ms")] == ["---", "---:", "---:"]
    assert terminal[2][: terminal[0].index("batch") + len("batch")].endswith("    1")


def test_the_renderer_needs_only_the_standard_library():
    # asp check must run on a bare CI runner: its tables come from asp_export.tables, which imports no
    # third-party package (the check-stdlib contract in pyproject.toml also forbids rich there)
    import ast
    import sys
    from pathlib import Path

    tree = ast.parse(Path(tables.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_a_sweep_error_with_a_pipe_stays_in_its_cell_of_the_comparison_table():
    from asp_export.sweep import render_markdown

    failed = {"method": "ssl", "target": 0.7, "status": "failed", "error": "shape (1|2) refused", "run": "y"}
    reference = {"accuracy": 0.9, "params": 1000, "flops": 2000}
    comparison = {"model": "m", "data": "d", "kind": "flops", "reference": reference, "rows": [failed]}
    lines = render_markdown(comparison).splitlines()
    header = next(ln for ln in lines if ln.startswith("| method"))
    row = next(ln for ln in lines if ln.startswith("| ssl"))
    cells = re.split(r"(?<!\\)\|", row)[1:-1]
    assert len(cells) == len(re.split(r"(?<!\\)\|", header)[1:-1]) == 9
    assert cells[7].strip() == "shape (1\\|2) refused"
