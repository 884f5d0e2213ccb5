"""Shared pieces of the benchmark scripts: calibration, peak memory, timing reporter, results files.

Every benchmark prints exactly one JSON line to stdout and appends the same line to
``benchmarks/results/<name>.jsonl``. Progress goes to stderr through ``logging``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / ".cache"

if str(REPO_ROOT / "src") not in sys.path:  # a clean checkout without an editable install
    sys.path.insert(0, str(REPO_ROOT / "src"))

from modelbuilder.training.reporter import RecordingReporter  # noqa: E402

logger = logging.getLogger("benchmarks")


# ------------------------------------------------------------------------------------- calibration
def matmul_gflops(n: int = 768, seconds: float = 0.6) -> float:
    """float32 matrix-multiply speed of this machine right now (numpy's BLAS, all its threads)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    count, start = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return round(2 * n**3 * count / elapsed / 1e9, 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibrate() -> dict[str, Any]:
    """A snapshot of how fast this shared machine is at this moment."""
    load1, load5, _ = os.getloadavg()
    return {
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "matmul_gflops": matmul_gflops(),
        "load_1m": round(load1, 2),
        "load_5m": round(load5, 2),
    }


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "packages": package_versions(),
    }


def package_versions(names: tuple[str, ...] = ("torch", "onnxruntime", "numpy", "pillow", "scikit-learn")
                     ) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


# -------------------------------------------------------------------------------------- memory
def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child process, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "largest_child": round(children, 1)}


def proc_status_mib(pid: int | str = "self") -> dict[str, float]:
    """The memory lines of ``/proc/<pid>/status`` (VmRSS, VmHWM, RssAnon, RssFile, ...) in MiB.

    Empty where there is no /proc (not Linux) or the process is gone.
    """
    values: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.startswith(("Vm", "Rss")) and rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0]) / 1024
    return values


class MemoryMonitor:
    """Peak RSS and peak anonymous memory (``RssAnon``) of a process, sampled in a background thread.

    RSS counts pages of memory-mapped files, which the OS may drop and read again; ``RssAnon`` counts
    only the process's own memory (arrays, heaps), which it cannot: that is what grows with the data
    when arrays are held in RAM instead of mapped from the feature cache. The kernel keeps the peak of
    RSS (``VmHWM``) but not of ``RssAnon``, so that one is sampled (every ``interval`` seconds; a spike
    shorter than that can be missed). Sampling another process (``pid``) from here keeps working while
    that process holds its GIL in a long numpy call.
    """

    def __init__(self, pid: int | str = "self", interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-monitor", daemon=True)

    def _sample(self) -> None:
        values = proc_status_mib(self.pid)
        if values:
            self.samples += 1
            for key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                if key in values:
                    self.peak[key] = max(self.peak.get(key, 0.0), values[key])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> MemoryMonitor:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, float | int]:
        """Stop sampling; the peaks in MiB (see ``result``)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()  # the last look (nothing when the process has already exited)
        return self.result()

    def result(self) -> dict[str, float | int]:
        """``peak_rss_mib`` (the kernel's VmHWM), ``peak_rss_anon_mib`` and ``peak_rss_file_mib`` (the
        highest samples) and how many samples they come from."""
        peak_rss = max(self.peak.get("VmHWM", 0.0), self.peak.get("VmRSS", 0.0))
        return {"peak_rss_mib": round(peak_rss, 1),
                "peak_rss_anon_mib": round(self.peak.get("RssAnon", 0.0), 1),
                "peak_rss_file_mib": round(self.peak.get("RssFile", 0.0), 1), "samples": self.samples}

    def __enter__(self) -> MemoryMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------- reporter
@dataclass
class TimingReporter(RecordingReporter):
    """A RecordingReporter that also timestamps phases and trials and echoes log lines to stderr."""

    phases: list[tuple[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _last_decile: dict[str, int] = field(default_factory=dict)

    def phase(self, name: str, message: str = "") -> None:
        label = f"trial:{message}" if name == "trial" else name
        self.phases.append((label, time.monotonic()))
        logger.info("phase %s %s", label, message if name != "trial" else "")
        super().phase(name, message)

    def progress(self, task: str, completed: int, total: int | None) -> None:
        if total:
            decile = 10 * completed // total
            if decile > self._last_decile.get(task, 0):
                self._last_decile[task] = decile
                logger.info("%s: %d/%d", task, completed, total)
        super().progress(task, completed, total)

    def log(self, line: str) -> None:
        if line.startswith("plan: "):
            # The scan has ended; what follows until the feature phase is building the backbone.
            self.phases.append(("backbone_setup", time.monotonic()))
        logger.info("%s", line)
        super().log(line)

    def phase_seconds(self, end: float | None = None) -> dict[str, float]:
        """Wall seconds of every phase, each lasting until the next one starts (or ``end``)."""
        end = time.monotonic() if end is None else end
        marks = [("setup", self.started), *self.phases, ("end", end)]
        seconds: dict[str, float] = {}
        for (label, start), (_, stop) in zip(marks, marks[1:], strict=False):
            seconds[label] = round(seconds.get(label, 0.0) + stop - start, 2)
        return seconds

    def metrics(self, key: str) -> list[float]:
        return [args[1] for args in self.of_kind("metric") if args[0] == key]

    def log_lines(self) -> list[str]:
        return [args[1] for args in self.of_kind("log")]


# ---------------------------------------------------------------------------------------- results
def git_revision() -> str | None:
    """The commit the code was run at, with ``+dirty`` when ``src/`` has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10, check=False)
        status = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    revision = head.stdout.strip()
    return (revision + ("+dirty" if status.stdout.strip() else "")) or None


REVISION_AT_START = git_revision()  # the code a run imports is the code at its start


def emit(name: str, record: dict[str, Any], results_file: Path | None = None) -> dict[str, Any]:
    """Print ``record`` as one JSON line on stdout and append it to the benchmark's results file."""
    full = {"benchmark": name, "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "revision": REVISION_AT_START, "machine": machine(), **record}
    line = json.dumps(full, sort_keys=False, default=str)
    target = results_file or RESULTS_DIR / f"{name}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return full


def setup_logging(verbose: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


def isolated_home(path: Path) -> Path:
    """Point MODELBUILDER_HOME (weights and feature caches) at ``path`` and forbid downloads."""
    path.mkdir(parents=True, exist_ok=True)
    os.environ["MODELBUILDER_HOME"] = str(path)
    os.environ["MODELBUILDER_OFFLINE"] = "1"
    os.environ.setdefault("MODELBUILDER_NO_PROGRESS", "1")
    return path


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of subsets, splits and training")
    parser.add_argument("--results", type=Path, default=None,
                        help="results file to append to (default benchmarks/results/<name>.jsonl)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def stratified_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of about ``limit`` items with every label in its original proportion (sorted)."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    classes, counts = np.unique(labels, return_counts=True)
    for value, count in zip(classes, counts, strict=True):
        members = np.flatnonzero(labels == value)
        take = max(2, round(limit * count / len(labels)))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def accuracy_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro accuracy (the mean of per-label recall, ML.NET's MacroAccuracy)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return {"accuracy": round(float(np.mean(y_true == y_pred)), 4),
            "macro_accuracy": round(float(np.mean(recalls)), 4)}


def fresh_dir(parent: Path, prefix: str) -> Path:
    """A new, empty folder under ``parent`` (for a cold feature cache or a run's outputs)."""
    import tempfile

    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
