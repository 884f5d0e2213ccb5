"""``benchmarks/estimate_accuracy.py`` runs end to end on the tiny data set (the wizard tests' data), as a
user runs it: one JSON line with the estimate, the trainer's recorded feature time and their ratio, a summary
line and the table on stderr. The ratio itself is not asserted: it depends on how loaded the machine is
(benchmarks/README.md has the measured figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.torch]

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "estimate_accuracy.py"


def test_estimate_accuracy_prints_estimate_actual_and_ratio(tmp_path: Path) -> None:
    results = tmp_path / "estimate_accuracy.jsonl"
    command = [sys.executable, str(SCRIPT), "--only", "tiny", "--results", str(results), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stdout[-2000:]  # the case, then the summary
    record, summary = (json.loads(line) for line in lines)
    assert [json.loads(line) for line in results.read_text().splitlines()[-2:]] == [record, summary]
    assert record["data"] == "tiny" and record["images"] == 30 and record["backbone"] == "test_tiny"
    assert record["source_size"] == "24x24"
    assert record["speed_source"] == "probe" and record["estimate_overhead_seconds"] > 0
    assert record["actual_seconds"] > 0
    assert record["ratio"] == pytest.approx(record["estimate_seconds"] / record["actual_seconds"], abs=0.01)
    assert record["within_35"] is (abs(record["ratio"] - 1) <= 0.35)
    assert record["estimate_resolution"] == record["actual_resolution"]
    assert summary["benchmark"] == "estimate_accuracy_summary" and summary["cases"] == 1
    assert summary["within_35"] == int(record["within_35"])
    assert "of 1 estimates within ±35%" in done.stderr  # the table
