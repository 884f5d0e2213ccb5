"""Data of another nature: larger RGB photos (160 px), few images per label, modelbuilder vs its peers.

    .venv/bin/python benchmarks/photos.py                    # --time 2m, 13 labels, 24 + 64 per label
    .venv/bin/python benchmarks/photos.py --time 5m --repeat 2

The task is built offline from the sample photos inside scikit-image and scikit-learn
(benchmarks/_photos.py): the label is the source photo, training images come from two diagonal
quadrants of each photo and test images from the other two, so no test pixel was seen in training.
Every variant of ``baselines.py`` (modelbuilder, linear head, tutorial fine-tune, scikit-learn on
32-px RGB thumbnails, fastai) trains on the same training folder within the same budget and is
scored on the same test images (test-time prediction outside the budget). Prints one JSON line and
appends it to benchmarks/results/photos.jsonl.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from _common import CACHE_DIR, calibrate, common_arguments, emit, peak_rss_mb, setup_logging

logger = logging.getLogger("benchmarks")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from _photos import LABELS
    from baselines import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", default="2m", help="training budget of every variant (default 2m)")
    parser.add_argument("--labels", default=",".join(LABELS),
                        help="comma-separated subset of the photo labels (default: all 13)")
    parser.add_argument("--train-per-label", type=int, default=24, help="training images per label")
    # 64 test images per label (832): the test set, not the budget, bounds what a run can show (one
    # image of 312 is 0.3%); they are generated once and predicted outside the budget.
    parser.add_argument("--test-per-label", type=int, default=64, help="test images per label (default 64)")
    parser.add_argument("--size", type=int, default=160, help="side of the generated images in px")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of "
                        + ", ".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=1, help="rounds; even rounds run in reverse order")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--architecture", default="auto", help="modelbuilder's --architecture")
    parser.add_argument("--image-size", type=int, default=224,
                        help="input size of the linear-head and fine-tuning baselines (default 224)")
    parser.add_argument("--fastai-size", type=int, default=None,
                        help="input size of the fastai peer (default: --size, the photos' own size)")
    common_arguments(parser)
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    unknown = set(args.labels.split(",")) - set(LABELS)
    if unknown:
        parser.error(f"unknown labels {sorted(unknown)}; choose from {', '.join(LABELS)}")
    if min(args.train_per_label, args.test_per_label) < 2 or args.size < 32:
        parser.error("--train-per-label and --test-per-label need at least 2 images, --size at least 32")
    if args.fastai_size is None:
        args.fastai_size = args.size
    return args


def main(argv: list[str] | None = None) -> int:
    from _photos import build_photos
    from baselines import run_rounds, run_variant, skipped_variants

    from modelbuilder.training.config import parse_duration

    args = parse_args(argv)
    setup_logging(not args.quiet)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # what run_training uses too
    budget = parse_duration(args.time)
    labels = args.labels.split(",")
    data, train, test = build_photos(labels, args.train_per_label, args.test_per_label, args.size, args.seed,
                                     args.cache_dir)
    variants = args.variants.split(",")
    # scikit-learn sees 32-px RGB thumbnails (3,072 columns): colour matters for photos.
    rounds, summary = run_rounds(variants, args.repeat, lambda name: run_variant(
        name, args, budget, data, train, test, labels, pixel_format=(32, "RGB")))
    emit("photos", {
        "config": {"time": args.time, "budget_s": budget, "labels": labels, "train_images": len(train[0]),
                   "test_images": len(test[0]), "train_per_label": args.train_per_label,
                   "test_per_label": args.test_per_label, "size": args.size, "seed": args.seed,
                   "repeat": args.repeat, "image_size": args.image_size, "fastai_size": args.fastai_size},
        "accuracy": summary,
        "skipped": skipped_variants(rounds),
        "runs": rounds,
        "calibration_end": calibrate(),
        "peak_rss_mb": peak_rss_mb(),
    }, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
