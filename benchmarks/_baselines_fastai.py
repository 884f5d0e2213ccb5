"""The fastai peer: ``vision_learner`` + ``fine_tune`` on the same offline EfficientNet-Lite0 weights.

What a fastai user writes in one screen of code (``ImageDataLoaders`` with ``valid_pct=0.2``,
``Resize`` + ``aug_transforms``, ``vision_learner``, ``fine_tune``), with the epochs chosen so that
training fits the budget: three real whole-network training batches are timed first (the probe
counts against the budget, and the weights are restored afterwards; a frozen step, whose backward
pass still runs through the body because fastai keeps BatchNorm trainable, is taken as
``FROZEN_STEP_RATIO`` of it), then

- when a frozen epoch and at least one whole-network epoch fit: ``fine_tune(N, freeze_epochs=1)``
  with as many whole-network epochs N as fit;
- otherwise: one-cycle training of the whole network (``fine_tune(1, freeze_epochs=0)``) over the
  fraction of an epoch that fits (a seeded random part of the training images), as in issue 10's
  reference run (0.84 of an epoch of the 60k Fashion-MNIST images at 64 px).

A callback keeps the fit inside the budget when the machine gets busier mid-run: before each
epoch it shortens the one-cycle schedule to the epochs that still fit (so the learning rate still
anneals), and it stops after any batch past the deadline.

fastai runs in a child process (``python _baselines_fastai.py SPEC OUT``): it patches torch and
pathlib classes on import and starts DataLoader workers, neither of which should touch the other
variants of the same benchmark run. fastai is not a dependency of modelbuilder: when it cannot be
imported, it is installed (without touching the environment's torch) into
``benchmarks/.cache/fastai-packages``, which only this child process puts on its path.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks")

# Seconds of a frozen training step per whole-network step: 0.49 measured here (photos, 160 px, batch
# 31, 2 shared cores); only the frozen epoch's share of the plan depends on it.
FROZEN_STEP_RATIO = 0.5
PACKAGES_DIR = Path(__file__).resolve().parent / ".cache" / "fastai-packages"
# fastai's pure-Python dependencies that a torch environment lacks. --no-deps, so pip never replaces
# torch/torchvision; fastprogress < 1.1 does not pull in python-fasthtml (a web server stack) and
# fastai's text dependencies (spaCy) are not needed by fastai.vision.
PACKAGES = ("fastai>=2.8,<2.9", "fastcore", "fastprogress<1.1", "fastdownload", "fasttransform",
            "plum-dispatch<2.10", "beartype", "matplotlib", "contourpy", "cycler", "fonttools",
            "kiwisolver", "pyparsing")


def install_command(target: Path = PACKAGES_DIR) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
            "--target", str(target), *PACKAGES]


def _importable(extra_path: Path | None) -> str | None:
    """None when ``import fastai.vision.all`` works (with ``extra_path`` appended), else the error."""
    env = dict(os.environ, MPLBACKEND="Agg")
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(extra_path)) if p)
    done = subprocess.run([sys.executable, "-c", "import fastai.vision.all"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1]


def ensure_fastai(target: Path = PACKAGES_DIR) -> tuple[Path | None, str | None]:
    """Where fastai comes from: (extra path or None for the environment, None) or (None, why not).

    Installs fastai into ``target`` when neither the environment nor ``target`` has it.
    """
    if _importable(None) is None:
        return None, None
    if target.is_dir() and _importable(target) is None:
        return target, None
    command = install_command()
    logger.info("fastai is not installed; installing it into %s", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="fastai-packages-", dir=target.parent))
    command[command.index("--target") + 1] = str(staging)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        done = subprocess.CompletedProcess(command, 1, "", f"{type(exc).__name__}: {exc}")
    manual = shlex.join(install_command()).replace(sys.executable, "python")
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        last = [line for line in done.stderr.splitlines() if "is ignored" not in line][-1:] or ["failed"]
        return None, f"fastai is not installed and installing it failed ({last[0]}); install it: {manual}"
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # whole or not at all: a concurrent or interrupted install never leaves half
    error = _importable(target)
    if error is not None:
        return None, f"fastai was installed into {target} but does not import ({error}); try: {manual}"
    return target, None


def fastai_finetune(train: tuple[list[Path], np.ndarray], test: tuple[list[Path], np.ndarray],
                    budget_s: float, seed: int, label_names: list[str], size: int,
                    data_folder: Path | None = None) -> dict[str, Any]:
    """Train the fastai peer in a child process; the result has ``predicted`` (label indices) or
    ``skipped`` (why fastai is not available)."""
    extra_path, reason = ensure_fastai()
    if reason is not None:
        logger.warning("skipping fastai: %s", reason)
        return {"skipped": reason}
    with tempfile.TemporaryDirectory(prefix="fastai-run-") as tmp:
        spec = {"train_paths": [str(p) for p in train[0]],
                "train_labels": [label_names[int(v)] for v in train[1]],
                "test_paths": [str(p) for p in test[0]], "label_names": label_names, "budget_s": budget_s,
                "seed": seed, "size": size, "data_folder": str(data_folder) if data_folder else None}
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_file.write_text(json.dumps(spec))
        env = dict(os.environ, MPLBACKEND="Agg")
        if extra_path is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(extra_path)) if p)
        started = time.monotonic()
        # The child's stdout (fastai's epoch table) goes to our stderr: stdout is the benchmark's JSON line.
        done = subprocess.run([sys.executable, __file__, str(spec_file), str(out_file)], env=env,
                              stdout=sys.stderr, check=False)
        if done.returncode != 0 or not out_file.is_file():
            raise RuntimeError(f"the fastai child process failed (exit status {done.returncode}); see stderr")
        result: dict[str, Any] = json.loads(out_file.read_text())
    result["process_seconds"] = round(time.monotonic() - started, 1)
    result["predicted"] = np.array(result["predicted"])
    return result


# ------------------------------------------------------------------------------ the child process
def _plan(budget_left: float, n_train: int, n_valid: int, batch_size: int, frozen_step: float,
          full_step: float, epoch_overhead: float = 0.0) -> dict[str, Any]:
    """How many frozen / whole-network epochs (or which fraction of one) fit ``budget_left`` seconds.

    ``epoch_overhead``: fixed seconds of every epoch (fastai starts its DataLoader workers anew for
    the training and for the validation pass of each epoch).
    """
    steps = max(1, n_train // batch_size)  # fastai drops the last partial training batch
    valid = math.ceil(n_valid / batch_size) * full_step / 3 + epoch_overhead  # forward only, no backward
    frozen_epoch, full_epoch = steps * frozen_step + valid, steps * full_step + valid
    if budget_left >= frozen_epoch + full_epoch:
        epochs = max(1, int((budget_left - frozen_epoch) // full_epoch))
        return {"freeze_epochs": 1, "epochs": epochs, "fraction": 1.0,
                "estimated_seconds": round(frozen_epoch + epochs * full_epoch, 1)}
    fraction = min(1.0, max(0.0, (budget_left - valid) / (steps * full_step)))
    return {"freeze_epochs": 0, "epochs": 1, "fraction": round(fraction, 3),
            "estimated_seconds": round(fraction * steps * full_step + valid, 1)}


def _child(spec_file: Path, out_file: Path) -> None:
    sys.stdout = sys.stderr  # fastai prints its tables; keep them off any captured stdout
    started_import = time.monotonic()
    import torch
    from fastai.callback.core import Callback, CancelFitException
    from fastai.vision.all import (
        ImageDataLoaders,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        vision_learner,
    )

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a checkout without install
    from modelbuilder.training.backbones import create_backbone, get_backbone_spec

    import_seconds = time.monotonic() - started_import
    spec = json.loads(spec_file.read_text())
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(spec["seed"])
    started = time.monotonic()
    deadline = started + spec["budget_s"]
    backbone = get_backbone_spec("efficientnet_lite0")
    size, seed = spec["size"], spec["seed"]
    n_images = len(spec["train_paths"])
    batch_size = max(2, min(64, int(n_images * 0.8) // 8))  # at least ~8 steps per epoch on few images
    tfms = {"item_tfms": Resize(size), "batch_tfms": [*aug_transforms(), Normalize.from_stats(backbone.mean,
                                                                                            backbone.std)],
            "bs": batch_size, "seed": seed, "valid_pct": 0.2}
    if spec["data_folder"]:
        # The training folder itself: from_folder(valid_pct=...) reads every image below the path it is
        # given, so pointing it at the folder above (next to test/) would train on the test images.
        dls = ImageDataLoaders.from_folder(spec["data_folder"], **tfms)
    else:
        dls = ImageDataLoaders.from_lists(Path("/"), [Path(p) for p in spec["train_paths"]],
                                          spec["train_labels"], **tfms)
    n_train, n_valid = len(dls.train_ds), len(dls.valid_ds)
    if n_train + n_valid != n_images:
        raise RuntimeError(f"fastai found {n_train + n_valid} training images, the benchmark gave {n_images}")

    def lite0(pretrained: bool = True) -> Any:  # a callable arch, as for any non-fastai model
        return create_backbone("efficientnet_lite0", pretrained=pretrained)

    # cut=-2 drops timm's global pool and (empty) classifier; fastai adds its own pooled head.
    # normalize=False: the Normalize above uses the offline weights' statistics, not ImageNet's.
    learn = vision_learner(dls, lite0, cut=-2, normalize=False, metrics=accuracy)

    class StepTimer(Callback):
        """Times training batches (data loading included) and stops the probe after ``limit`` of them."""

        def __init__(self, limit: int) -> None:
            self.limit, self.marks = limit, [time.monotonic()]

        def after_batch(self) -> None:
            if self.training:
                self.marks.append(time.monotonic())
                if len(self.marks) > self.limit:
                    raise CancelFitException()

        def step_seconds(self) -> float:
            if len(self.marks) < 3:
                raise RuntimeError("the fastai probe ran fewer than two training batches (too few images)")
            return float(np.median(np.diff(self.marks[1:])))

        def startup_seconds(self) -> float:
            """The first batch's extra time: starting the DataLoader workers, the first batch's decode."""
            return max(0.0, self.marks[1] - self.marks[0] - self.step_seconds())

    class Budget(Callback):
        """Keeps a fit inside the budget on a machine whose speed changes mid-run (a busy minute is
        2-5x slower than the probe saw): before each epoch, the one-cycle schedule is shortened to
        the epochs that still fit at the speed measured so far (fastai reads ``n_epoch`` live, so
        the learning rate still anneals to its end); a hard stop after a batch past the deadline."""

        order = 99

        def __init__(self) -> None:
            self.stopped, self.shortened_to, self.fit_started = False, None, time.monotonic()

        def before_fit(self) -> None:
            self.fit_started = time.monotonic()

        def before_epoch(self) -> None:
            if self.epoch >= self.learn.n_epoch:  # fit's loop runs range(the n_epoch it started with)
                raise CancelFitException()
            if self.epoch == 0 or self.learn.n_epoch <= 1:
                return
            now = time.monotonic()
            per_epoch = (now - self.fit_started) / self.epoch
            fits = self.epoch + int((deadline - now) // per_epoch)
            if fits < self.learn.n_epoch:
                # At least this epoch: it runs the rest of the schedule (the hard stop may cut its end).
                self.learn.n_epoch = self.shortened_to = max(self.epoch + 1, fits)
                print(f"fastai: behind the plan, one-cycle shortened to {self.shortened_to} epochs",
                      flush=True)

        def after_batch(self) -> None:
            if time.monotonic() > deadline:
                self.stopped = True
                raise CancelFitException()

    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    # The first batch also starts the DataLoader workers: it is run but not timed.
    timer = StepTimer(3)  # batches: at least 8 per epoch (batch_size above)
    with learn.no_bar(), learn.no_logging():
        learn.unfreeze()
        learn.fit(1, 1e-6, cbs=timer)  # a tiny lr: the probe is restored anyway
    step_seconds = {"full": timer.step_seconds()}
    step_seconds["frozen"] = FROZEN_STEP_RATIO * step_seconds["full"]
    # Once, not twice (training + validation workers): the first batch also carries one-off costs
    # (first allocations, fastai's before_fit); an epoch measured 8 s of overhead where this gave 14 s.
    epoch_overhead = timer.startup_seconds()
    learn.model.load_state_dict(state)
    learn.opt = None  # fine_tune starts with a fresh optimizer
    plan = _plan(deadline - time.monotonic(), n_train, n_valid, batch_size, step_seconds["frozen"],
                 step_seconds["full"], epoch_overhead)
    if plan["fraction"] < 1.0:
        dls.train.n = max(batch_size, int(plan["fraction"] * n_train))  # the first n of a random order
    print(f"fastai plan: {plan} (step seconds {step_seconds}, epoch overhead {epoch_overhead:.1f} s, "
          f"batch {batch_size})", flush=True)
    budget = Budget()
    with learn.no_bar():
        learn.fine_tune(plan["epochs"], freeze_epochs=plan["freeze_epochs"], cbs=budget)
    train_seconds = time.monotonic() - started
    # The last validation fastai ran (the metric is the last column of the recorder's rows).
    valid_accuracy = float(learn.recorder.values[-1][-1]) if learn.recorder.values else None

    with learn.no_bar():
        probabilities, _ = learn.get_preds(dl=dls.test_dl(spec["test_paths"]))
    vocab = list(dls.vocab)
    index = {name: i for i, name in enumerate(spec["label_names"])}
    predicted = [index[vocab[int(i)]] for i in probabilities.argmax(1)]
    out_file.write_text(json.dumps({
        "predicted": predicted, "train_seconds": train_seconds, "import_seconds": round(import_seconds, 1),
        "image_size": size, "batch_size": batch_size, "train_images": n_train, "valid_images": n_valid,
        "plan": plan, "probe_step_seconds": {k: round(v, 3) for k, v in step_seconds.items()},
        "epoch_overhead_seconds": round(epoch_overhead, 2),
        "stopped_by_budget": budget.stopped, "shortened_to_epochs": budget.shortened_to,
        "valid_accuracy": None if valid_accuracy is None else round(valid_accuracy, 4),
        "fastai": __import__("fastai").__version__,
    }))


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
