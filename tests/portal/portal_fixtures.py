"""Fake workspaces for the portal tests: runs, trials, metrics, logs and real artifacts, written through the
metadata store and the artifact store directly (no training, no torch).

The model is the tiny ONNX colour classifier of ``tests/pipeline/onnx_factory.py`` (labels red, green,
blue), so "Try the model" gives real predictions: a pure red image is predicted ``red``.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import psutil
from PIL import Image

from factories import load_test_module
from modelbuilder.artifacts import LocalArtifactStore
from modelbuilder.compute.job import RunFolders, WorkerRecord
from modelbuilder.entities import RunStatus, Workspace
from modelbuilder.pipeline import write_bundle
from modelbuilder.store import Catalog, MetadataStore, open_workspace_store, workspace_folder
from modelbuilder.training.evaluation import evaluate


def _load_onnx_factory() -> ModuleType:
    return load_test_module("pipeline/onnx_factory.py", "portal_onnx_factory")


onnx_factory = _load_onnx_factory()
LABELS: list[str] = list(onnx_factory.LABELS)
PURE: dict[str, tuple[int, int, int]] = dict(onnx_factory.PURE)
WORKSPACE = "portal-ws"
PORT = 8765
BASE_URL = f"http://127.0.0.1:{PORT}"


def build_model(folder: Path) -> Path:
    """bestModel.onnx, bestModelMap.json and MLModel.zip of the colour classifier in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = onnx_factory.make_classifier(folder / "bestModel.onnx")
    (folder / "bestModelMap.json").write_text(json.dumps(LABELS), encoding="utf-8")
    write_bundle(folder / "MLModel.zip", onnx_path, LABELS, onnx_factory.SPEC, metadata={"backbone": "tiny"})
    return folder


def colour_image(label: str, index: int = 0, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(index)
    pixels = np.tile(np.array(PURE[label], dtype=np.float32), (size, size, 1))
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def build_data(folder: Path, per_label: int = 4) -> list[Path]:
    """``folder/<label>/<label>_<i>.png`` for the three colour labels; the images, in label order."""
    paths = []
    for label in LABELS:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            path = folder / label / f"{label}_{i}.png"
            colour_image(label, i).save(path)
            paths.append(path)
    return paths


def fake_evaluation(images: list[Path], *, wrong: int = 2, relative_to: Path | None = None) -> dict:
    """An evaluation.json of ``images`` whose first ``wrong`` images are predicted as the next label.

    Every image is listed in ``validation_items`` (absolute paths, or relative to ``relative_to``).
    """
    truth = np.array([LABELS.index(p.parent.name) for p in images])
    predicted = truth.copy()
    predicted[:wrong] = (truth[:wrong] + 1) % len(LABELS)
    probabilities = np.full((len(images), len(LABELS)), 0.05)
    probabilities[np.arange(len(images)), predicted] = 0.9
    names = [str(p.relative_to(relative_to)) if relative_to else str(p) for p in images]
    evaluation = evaluate(truth, probabilities, LABELS, paths=names)
    evaluation["validation_items"] = [
        {
            "path": names[i],
            "true_label": LABELS[truth[i]],
            "predicted_label": LABELS[predicted[i]],
            "score": float(probabilities[i, predicted[i]]),
        }
        for i in range(len(images))
    ]
    return evaluation


def code_zip(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}/main.py", "print('hello')\n")
    return buffer.getvalue()


@dataclass
class PortalWorld:
    """A catalog workspace with its store and artifact store, plus a model and a data folder."""

    catalog: Catalog
    workspace: Workspace
    store: MetadataStore
    artifacts: LocalArtifactStore
    model_dir: Path
    data_dir: Path
    images: list[Path]

    def close(self) -> None:
        self.store.close()
        self.catalog.close()

    def start_run(
        self,
        experiment: str = "flowers",
        *,
        trials: int = 2,
        epochs: int = 3,
        params: dict | None = None,
        time_budget: float = 600.0,
    ) -> str:
        """A Running run with ``trials`` completed trials (per-epoch metrics), progress and log lines."""
        store = self.store
        exp = store.get_or_create_experiment(experiment)
        run = store.create_run(
            exp.id,
            compute="local",
            params={
                "data": str(self.data_dir),
                "architecture": "resnet50",
                "time_budget": time_budget,
                **(params or {}),
            },
            status=RunStatus.QUEUED,
        )
        store.set_run_status(run.id, RunStatus.PREPARING, phase="scanning data")
        store.set_run_status(run.id, RunStatus.RUNNING, phase=f"trial {trials}")
        for t in range(trials):
            child = store.create_run(
                exp.id,
                parent_run_id=run.id,
                name=f"trial-{t + 1}",
                compute="local",
                params={"backbone": "resnet50", "strategy": "linear" if t == 0 else "finetune"},
                status=RunStatus.RUNNING,
            )
            quality = 0.6 + 0.15 * t
            rows = []
            for epoch in range(1, epochs + 1):
                rows += [
                    ("train_accuracy", min(1.0, quality + 0.05 * epoch + 0.03), epoch, None),
                    ("val_accuracy", min(1.0, quality + 0.05 * epoch), epoch, None),
                    ("train_loss", 1.2 / epoch - 0.1 * t, epoch, None),
                    ("val_loss", 1.3 / epoch - 0.1 * t, epoch, None),
                ]
            store.log_metrics(child.id, rows)
            store.set_run_status(child.id, RunStatus.FINALIZING)
            store.set_run_status(child.id, RunStatus.COMPLETED)
        store.log_metrics(run.id, [("progress", 0.5, 0, None)])
        store.log_lines(run.id, [f"[{time.strftime('%H:%M:%S')}] training line {i}" for i in range(30)])
        return run.id

    def write_results(self, run_id: str, *, relative_paths: bool = False) -> dict[str, str]:
        """Write and record the outputs a worker writes (model, map, bundle, code, evaluation, log).

        Returns the sha256 of each recorded artifact by name.
        """
        evaluation = fake_evaluation(self.images, relative_to=self.data_dir if relative_paths else None)
        files = {
            "bestModel.onnx": (self.model_dir / "bestModel.onnx").read_bytes(),
            "bestModelMap.json": (self.model_dir / "bestModelMap.json").read_bytes(),
            "MLModel.zip": (self.model_dir / "MLModel.zip").read_bytes(),
            "Flowers.Model.zip": code_zip("Flowers.Model"),
            "Flowers.ConsoleApp.zip": code_zip("Flowers.ConsoleApp"),
            "evaluation.json": json.dumps(evaluation).encode("utf-8"),
            "logs/run.log": b"line 1\nline 2\n",
        }
        digests = {}
        for name, data in files.items():
            artifact = self.artifacts.put_bytes(run_id, data, name)
            self.store.log_artifact(run_id, artifact.path, artifact.size, artifact.sha256)
            digests[name] = artifact.sha256
        return digests

    def record_live_worker(self, run_id: str) -> None:
        """Record this (live) test process as the run's local worker, so a cancel waits for it to act
        (``CancelRequested``) instead of ending a worker-less run at once."""
        record = WorkerRecord(run_id, os.getpid(), create_time=psutil.Process().create_time())
        folders = RunFolders(workspace_folder(self.workspace), run_id)
        folders.state_dir.mkdir(parents=True, exist_ok=True)
        record.save(folders.worker_path)

    def complete_run(self, run_id: str, accuracy: float = 0.8333) -> None:
        """Finish a run as the worker does: final metrics, Finalizing, then Completed."""
        self.store.log_metrics(
            run_id,
            [
                ("accuracy", accuracy, 0, None),
                ("macro_accuracy", accuracy, 0, None),
                ("progress", 1.0, 1, None),
            ],
        )
        self.store.set_run_status(run_id, RunStatus.FINALIZING, phase="export")
        self.store.log_lines(run_id, ["Run completed."])
        self.store.set_run_status(run_id, RunStatus.COMPLETED, phase="done")

    def completed_run(self, experiment: str = "flowers", **kwargs: object) -> str:
        run_id = self.start_run(experiment, **kwargs)  # type: ignore[arg-type]
        self.write_results(run_id)
        self.complete_run(run_id)
        return run_id


def make_world(tmp_path: Path, model_dir: Path, name: str = WORKSPACE) -> PortalWorld:
    """A fresh workspace in the catalog of the current MODELBUILDER_HOME."""
    catalog = Catalog()
    workspace = catalog.create_workspace(name)
    data_dir = tmp_path / "data"
    images = build_data(data_dir)
    return PortalWorld(
        catalog,
        workspace,
        open_workspace_store(workspace),
        LocalArtifactStore(workspace.artifact_root),
        model_dir,
        data_dir,
        images,
    )


def csrf_headers(app: object) -> dict[str, str]:
    """What a portal page sends with a state-changing request: its origin and its token."""
    token = app.state.portal.csrf_token  # type: ignore[attr-defined]
    return {"Origin": BASE_URL, "X-CSRF-Token": token}
