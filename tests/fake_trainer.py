"""A fast stand-in for ``modelbuilder.training.trainer.run_training`` with the same contract.

Used by the services, compute, CLI and Python API tests to exercise the worker, cancel, kill and resume
without torch. It reads the label folders, runs ``trials`` trials of ``epochs`` epochs (reporting metrics,
progress and log lines), honours ``should_stop()``, saves a checkpoint after each finished trial (and skips
finished trials when resumed), re-exports ``bestModel.onnx`` after every trial (reporting it as an
artifact, so kills can land while artifacts are being recorded), and writes small versions of every
output. Options come from ``config.extra["fake"]``:

- ``trials`` (3), ``epochs`` (3), ``epoch_seconds`` (0.05): how long it runs;
- ``model_bytes`` (20_000): size of bestModel.onnx;
- ``fail``: ``"dataset"`` raises DatasetError, ``"crash"`` raises RuntimeError, ``"exit"`` calls os._exit(3)
  (the worker dies without a word), all after the first trial;
- ``marker``: a file the trainer creates once it trains (tests wait for it).

The same options can come as JSON in ``$FAKE_TRAINER_OPTIONS`` (runs started through the CLI).

``use_fake_trainer`` is a fixture that points submissions at this module and lets worker processes
import it.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelbuilder.errors import DatasetError
from modelbuilder.fileio import atomic_write_bytes, atomic_write_text
from modelbuilder.training.config import TrainingConfig, TrainingResult, TrialSummary
from modelbuilder.training.reporter import Reporter

TARGET = "fake_trainer:run_training"
#: Options as JSON in the environment (for runs started through the CLI, which has no ``extra``).
OPTIONS_ENV = "FAKE_TRAINER_OPTIONS"
TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def use_fake_trainer(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Submissions run this fake trainer (also in worker processes); yields the target."""
    from modelbuilder.services import training_run

    monkeypatch.setattr(training_run, "DEFAULT_TRAINING_TARGET", TARGET)
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{TESTS_DIR}{os.pathsep}{path}" if path else str(TESTS_DIR))
    yield TARGET


def fake_config(data: Path, **fake: Any) -> TrainingConfig:
    """A TrainingConfig for the fake trainer with ``fake`` options."""
    return TrainingConfig(data=str(data), time_budget=10, extra={"fake": fake})


def _labels(data: Path) -> list[str]:
    if not data.is_dir():
        raise DatasetError(f"The training data {str(data)!r} is not a folder.", hint="Give a folder.")
    labels = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(labels) < 2:
        raise DatasetError(
            f"The training data {str(data)!r} has {len(labels)} label(s); at least 2 are needed.",
            hint="Add a sub-folder per label.",
        )
    return labels


def _write_outputs(work_dir: Path, name: str, labels: list[str], accuracy: float) -> dict[str, Path]:
    files = {
        "bestModelMap.json": atomic_write_text(work_dir / "bestModelMap.json", json.dumps(labels)),
        "evaluation.json": atomic_write_text(
            work_dir / "evaluation.json", json.dumps({"accuracy": accuracy, "labels": labels})
        ),
    }
    model_zip = work_dir / "MLModel.zip"
    with zipfile.ZipFile(model_zip, "w") as archive:
        archive.writestr("manifest.json", json.dumps({"format_version": 1, "labels": labels}))
    files["MLModel.zip"] = model_zip
    package = work_dir / f"{name}.Model"
    (package / name.lower()).mkdir(parents=True, exist_ok=True)
    atomic_write_text(package / "pyproject.toml", f'[project]\nname = "{name.lower()}"\n')
    atomic_write_text(package / name.lower() / "consume_model.py", "def predict(x):\n    return x\n")
    console = work_dir / f"{name}.ConsoleApp"
    console.mkdir(exist_ok=True)
    atomic_write_text(console / "main.py", "print('hello')\n")
    files[f"{name}.Model"] = package
    files[f"{name}.ConsoleApp"] = console
    return files


def run_training(
    config: TrainingConfig, reporter: Reporter, work_dir: Path, *, checkpoint_dir: Path | None = None
) -> TrainingResult:
    opts: dict[str, Any] = json.loads(os.environ.get(OPTIONS_ENV, "{}"))
    opts.update(config.extra.get("fake", {}))
    started = time.monotonic()
    reporter.phase("scanning", f"reading {config.data}")
    labels = _labels(Path(config.data))
    trials, epochs = int(opts.get("trials", 3)), int(opts.get("epochs", 3))
    epoch_seconds = float(opts.get("epoch_seconds", 0.05))
    if opts.get("marker"):
        Path(opts["marker"]).write_text(str(os.getpid()))
    checkpoint = checkpoint_dir / "fake_checkpoint.json" if checkpoint_dir else None
    done: dict[str, float] = json.loads(checkpoint.read_text()) if checkpoint and checkpoint.exists() else {}
    summaries: list[TrialSummary] = []
    canceled = False
    best = max(done.values(), default=0.0)
    for t in range(trials):
        trial = f"trial-{t}"
        if trial in done:
            reporter.log(f"{trial} finished before the resume (val_accuracy {done[trial]:.3f}); skipped")
            continue
        if reporter.should_stop():
            canceled = True
            break
        reporter.phase("trial", trial)
        reporter.trial_started(trial, {"strategy": "fake", "lr": 0.01 * (t + 1)})
        accuracy = 0.0
        for epoch in range(epochs):
            if reporter.should_stop():
                canceled = True
                break
            time.sleep(epoch_seconds)
            accuracy = round(0.5 + 0.4 * (t + 1) / trials * (epoch + 1) / epochs, 4)
            reporter.metric("val_accuracy", accuracy, epoch, trial=trial)
            reporter.metric("loss", 1.0 - accuracy, epoch, trial=trial)
            reporter.progress("epochs", epoch + 1, epochs)
        reporter.trial_ended(trial, "Canceled" if canceled else "Completed", {"val_accuracy": accuracy})
        summaries.append(TrialSummary(trial, "fake", "fake_net", 32, accuracy, 0.1))
        if canceled:
            break
        best = max(best, accuracy)
        model = atomic_write_bytes(
            work_dir / "bestModel.onnx", os.urandom(int(opts.get("model_bytes", 20_000)))
        )
        reporter.artifact(model, "bestModel.onnx")
        reporter.metric("best_val_accuracy", best, t)
        done[trial] = accuracy
        if checkpoint is not None:
            atomic_write_text(checkpoint, json.dumps(done))
        if opts.get("fail") == "dataset":
            raise DatasetError("Label 'label0' has only 1 image; at least 2 are needed.", hint="Add images.")
        if opts.get("fail") == "crash":
            raise RuntimeError("fake trainer crashed")
        if opts.get("fail") == "exit":
            os._exit(3)
    reporter.phase("export", "writing outputs")
    if not (work_dir / "bestModel.onnx").exists():
        atomic_write_bytes(work_dir / "bestModel.onnx", b"fake-onnx")
    files = {"bestModel.onnx": work_dir / "bestModel.onnx"}
    files.update(_write_outputs(work_dir, config.project_name, labels, best))
    for name, path in files.items():
        reporter.artifact(path, name)
    reporter.metric("accuracy", best)
    return TrainingResult(
        accuracy=best,
        macro_accuracy=best - 0.01,
        backbone="fake_net",
        strategy="fake",
        labels=labels,
        seconds=time.monotonic() - started,
        output_dir=work_dir,
        files=files,
        trials=summaries,
        skipped_images=[{"path": "label0/broken.png", "reason": "truncated"}],
        evaluation={"accuracy": best},
        canceled=canceled,
    )
