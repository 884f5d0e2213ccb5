"""benchmarks/_common.MemoryMonitor: peak RSS and peak RssAnon of a process, told apart."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def common() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _common

        yield _common
    finally:
        sys.path.remove(str(BENCHMARKS))


def watch(common: ModuleType, script: str) -> dict[str, float]:
    """Run ``script`` in a child and sample it from here, as benchmarks/scaling.py samples its workers."""
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        monitor = common.MemoryMonitor(child.pid, interval=0.02).start()
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        monitor._sample()  # the child holds its memory until we answer: look at it now
        child.communicate("done\n", timeout=60)
        result: dict[str, float] = monitor.stop()
    return result


def test_arrays_held_in_memory_count_as_anonymous(common: ModuleType) -> None:
    result = watch(common, """
        import sys
        import numpy as np
        held = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MiB, every page touched
        print("ready", flush=True)
        sys.stdin.readline()
    """)
    assert result["peak_rss_anon_mib"] >= 200 and result["peak_rss_mib"] >= 200
    assert result["samples"] >= 2


def test_a_mapped_file_counts_in_rss_but_not_anonymous(common: ModuleType, tmp_path: Path) -> None:
    mapped = tmp_path / "rows.bin"
    mapped.write_bytes(b"\1" * (200 * 2**20))
    result = watch(common, f"""
        import sys
        import numpy as np
        rows = np.memmap({str(mapped)!r}, dtype=np.uint8, mode="c")
        total = int(rows.sum(dtype=np.int64))  # every page read: resident, but the file's
        print("ready", flush=True)
        sys.stdin.readline()
    """)
    assert result["peak_rss_mib"] >= 200 and result["peak_rss_file_mib"] >= 200
    assert result["peak_rss_anon_mib"] < 150  # the interpreter and numpy, not the 200 MiB of rows


def test_the_process_itself_can_be_watched(common: ModuleType) -> None:
    with common.MemoryMonitor() as monitor:
        block = b"\1" * (64 * 2**20)
        monitor._sample()
        del block
    result = monitor.result()
    assert result["peak_rss_anon_mib"] >= 64 and result["peak_rss_mib"] >= result["peak_rss_anon_mib"]
