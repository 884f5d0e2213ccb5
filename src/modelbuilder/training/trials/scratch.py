"""``scratch_cnn``: a compact CNN trained from scratch at about the images' own resolution, for small
images (28x28 digits, icons) where ImageNet features help least."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..loop import LoopData, fit_classifier
from ..plan import Plan, TrialEstimate, core_factor
from .augment import shift_flip_augment
from .base import TrialContext, TrialOutcome, loop_record

LR = 2e-3
WIDTH = 32
BATCH_SIZE = 128
#: Training images/s of ``compact_cnn`` at 28x28 on the 2-core reference machine (48k images: 4 epochs
#: in 240 s, see ``compact_cnn``); the cost grows with the pixel count. Scoring the validation split
#: after each epoch runs about 3x faster than training (no backward pass).
_REFERENCE_RATE = 800.0
_EVAL_SPEEDUP = 3.0
_MIN_TRIAL_SECONDS = 3.0
#: It needs a few epochs to beat the pretrained trials; more than this is never required to try it.
_MIN_EPOCHS, _MAX_MIN_SECONDS = 5, 15.0


def compact_cnn(num_classes: int, width: int = WIDTH) -> nn.Module:
    """A small VGG-style CNN (~120k parameters at width 32) for small images.

    Only one convolution runs at full resolution: on 2 CPU cores that is what lets it see the
    training set several times within a few minutes (measured on 48k 28x28 images, 240 s: 4 epochs
    and 88.2% test accuracy, against 1 epoch and 82.0% with a second full-resolution block).
    """

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    return nn.Sequential(
        block(3, width), nn.MaxPool2d(2),
        block(width, 2 * width), block(2 * width, 2 * width), nn.MaxPool2d(2),
        block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
        nn.Linear(4 * width, num_classes),
    )


class ScratchCNNTrial:
    name = "scratch_cnn"
    needs = frozenset({"small"})

    def estimate(self, plan: Plan, time_left: float) -> TrialEstimate | None:
        if not plan.scratch_pool:
            return None
        size = plan.feature_size // plan.scratch_pool
        rate = _REFERENCE_RATE * (28 / size) ** 2 * core_factor(plan.cores) * plan.speed
        epoch = (plan.num_train + plan.data.num_val / _EVAL_SPEEDUP) / rate
        minimum = min(_MAX_MIN_SECONDS, max(_MIN_TRIAL_SECONDS, _MIN_EPOCHS * epoch))
        return TrialEstimate(weight=1.0, min_seconds=minimum, epoch_seconds=epoch, batch_size=BATCH_SIZE,
                             image_size=size)

    def run(self, ctx: TrialContext) -> TrialOutcome:
        """Train ``compact_cnn`` on the input average-pooled by the plan's ``scratch_pool`` with
        shift+flip augmentation. The exported model starts with the same pooling, so it takes the same
        input as the backbone trials and can be ensembled with them in one graph."""
        torch.manual_seed(ctx.seed)
        cnn = compact_cnn(ctx.num_classes)
        train_x, val_x = ctx.split("small")
        size = train_x.shape[-1]
        data = LoopData(torch.from_numpy(train_x), torch.from_numpy(ctx.y_train).long(),
                        torch.from_numpy(val_x), torch.from_numpy(ctx.y_val).long(),
                        augment=shift_flip_augment(max(1, size // 8)))
        config = ctx.loop_config(lr=LR, weight_decay=5e-4, batch_size=BATCH_SIZE, patience=8)
        result = fit_classifier(cnn, data, config, ctx.reporter, ctx.strategy)
        pool = ctx.plan.scratch_pool or 1
        model = nn.Sequential(nn.AvgPool2d(pool), cnn).eval() if pool > 1 else cnn.eval()
        return TrialOutcome(self.name, "scratch_cnn", "compact_cnn", ctx.feature_spec, model,
                            result.val_accuracy, result.val_probabilities, result.seconds, result.canceled,
                            {"epochs": result.epochs, "lr": LR, "width": WIDTH, "cnn_size": size,
                             "image_size": ctx.feature_spec.crop_size},
                            record=loop_record(result))
