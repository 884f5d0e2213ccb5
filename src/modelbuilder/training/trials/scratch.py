"""``scratch_cnn``: a compact CNN trained from scratch at about the images' own resolution, for small
images (28x28 clothes and digits, icons) where ImageNet features help least.

Its width is sized from the measured speed of this machine and the time it gets, so that it sees the
training set at least ``TARGET_EPOCHS`` times: on 48k 28x28 images, width 32 for 4 epochs reached
88.2% test accuracy, widths 16-24 for 7-10 epochs 92.0-92.2% (see ``WIDTHS``, ``HEAD_GRID``)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..loop import LoopData, fit_classifier, predict_probabilities
from ..plan import Plan, TrialEstimate, core_factor
from .augment import shift_flip_augment
from .base import TrialContext, TrialOutcome, loop_record
from .tta import FlipAverage, flip_pays

LR = 2e-3
BATCH_SIZE = 128
#: Widths it may get, narrowest first. Training images/s of ``compact_cnn`` at 28x28 (one input
#: channel) on the 2-core reference machine, at width 32; the cost grows with the pixel count and
#: about as width ** ``_WIDTH_EXPONENT`` (measured side by side: width 24 runs 1.4x, width 48 0.57x as
#: fast as width 32, width 16 1.6x width 24 in two 10-epoch runs; small layers do not speed up
#: quadratically).
#: At about equal compute, width 24 for 7 epochs reached 92.2% test accuracy, width 16 for 10 92.0%.
WIDTHS = (16, 24, 32, 48, 64)
_REFERENCE_WIDTH = 32
_REFERENCE_RATE = 800.0
_WIDTH_EXPONENT = 1.1
#: Three input channels that carry one grey channel cost this much more than one channel (measured
#: side by side at width 32: 1.2x); grey images get a channel mean in front instead.
_RGB_COST = 1.2
#: Scoring the validation split after each epoch runs about 3x faster than training (no backward pass).
_EVAL_SPEEDUP = 3.0
TARGET_EPOCHS = 10
#: ... and at least this many optimizer steps: 1,600 images make 13 steps an epoch, and ten epochs of
#: them would leave the network barely trained; a narrower one that sees them ~80 times (augmented,
#: see AUGMENT_EPOCHS) learns them.
TARGET_STEPS = 1000
#: Shift+flip augmentation only when the network sees each image more often than this: within ~10
#: epochs it only slows learning down (48k 28x28 images, width 16, 10 epochs, official test set:
#: global-average head 88.9% with shift+flip, 90.6% without; grid head 91.5% with flips only, 92.0%
#: without); with few images and many epochs it keeps the CNN from memorising them.
AUGMENT_EPOCHS = 20
_MIN_TRIAL_SECONDS = 3.0
#: It needs a few epochs to beat the pretrained trials; more than this is never required to try it.
_MIN_EPOCHS, _MAX_MIN_SECONDS = 5, 15.0


class ChannelMean(nn.Module):
    """RGB input that carries a grey image -> its one channel (a third of the first layer's work)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)


#: The head sees the last feature map pooled to this grid, not one global average: where a feature
#: is (collar at the top, sole at the bottom) tells small images apart, and a global average has to
#: relearn it. Measured on 48k 28x28 images (official test set, width 16, 10 epochs, no augmentation):
#: 92.0% test accuracy against 90.6%.
HEAD_GRID = 3
#: The longest wait for a better validation score (see ``scratch_patience``), in epochs ...
MAX_PATIENCE = 30
#: ... or in optimizer steps, when the validation split has at least ``LONG_WAIT_VAL_IMAGES`` images:
#: 1,600 images make 13 steps an epoch, and a 30-epoch wait stopped the CNN at epoch 70 of 89, before
#: its learning rate had decayed (2k images, 3m: validation 86.25%; the same CNN trained to the end:
#: 87.5% validation, 86.6% test, and 89.5% test averaged with the partial fine-tune). A score over a
#: handful of images takes a handful of values and stops moving early: there 30 epochs are enough.
PATIENCE_STEPS = 1000
LONG_WAIT_VAL_IMAGES = 100


def grid_pool(side: int, grid: int = HEAD_GRID) -> nn.Module:
    """Average pooling of a ``side`` x ``side`` map to ``grid`` x ``grid`` with fixed windows that cover
    it (adaptive pooling with uneven windows does not export to ONNX); global when it is too small."""
    if side < grid:
        return nn.AdaptiveAvgPool2d(1)
    stride = side // grid
    return nn.AvgPool2d(side - (grid - 1) * stride, stride)


def compact_cnn(num_classes: int, width: int = _REFERENCE_WIDTH, in_channels: int = 3,
                size: int = 28) -> nn.Module:
    """A small VGG-style CNN (~130k parameters at width 32 and 28 px) for ``size`` x ``size`` images.

    Only one convolution runs at full resolution: on 2 CPU cores that is what lets it see the
    training set several times within a few minutes (measured on 48k 28x28 images, 240 s: 4 epochs
    and 88.2% test accuracy, against 1 epoch and 82.0% with a second full-resolution block).
    """

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    last = size // 4
    cells = HEAD_GRID ** 2 if last >= HEAD_GRID else 1
    return nn.Sequential(
        block(in_channels, width), nn.MaxPool2d(2),
        block(width, 2 * width), block(2 * width, 2 * width), nn.MaxPool2d(2),
        block(2 * width, 4 * width), grid_pool(last), nn.Flatten(), nn.Dropout(0.2),
        nn.Linear(4 * width * cells, num_classes),
    )


def training_rate(plan: Plan, width: int) -> float:
    """Expected training images/s of ``compact_cnn`` at ``width`` on this machine, now."""
    size = plan.feature_size // (plan.scratch_pool or 1)
    rate = _REFERENCE_RATE * (28 / size) ** 2 * (_REFERENCE_WIDTH / width) ** _WIDTH_EXPONENT
    if plan.data.channels != 1:
        rate /= _RGB_COST
    return rate * core_factor(plan.cores) * plan.speed


def epoch_seconds(plan: Plan, width: int) -> float:
    return (plan.num_train + plan.data.num_val / _EVAL_SPEEDUP) / training_rate(plan, width)


def target_epochs(num_train: int) -> float:
    """Passes over the data the width is chosen for: ``TARGET_EPOCHS``, more for few images."""
    return max(TARGET_EPOCHS, TARGET_STEPS * BATCH_SIZE / max(1, num_train))


def choose_width(plan: Plan, seconds: float) -> int:
    """The widest network that still gets ``target_epochs`` passes in ``seconds`` (else the narrowest)."""
    passes = target_epochs(plan.num_train)
    fitting = [w for w in WIDTHS if passes * epoch_seconds(plan, w) <= seconds]
    return fitting[-1] if fitting else WIDTHS[0]


def scratch_patience(planned_epochs: float, steps_per_epoch: int = 1, val_images: int = 0) -> int:
    """Epochs without a better validation score before the CNN stops.

    No early stop within the planned epochs: the learning rate decays to the end of the budget and the
    last epochs gain most, while a few hundred validation images swing by 3-4% from epoch to epoch (2k
    images: stopped after 10 of its 60 s at 84% validation accuracy with patience 8). But a handful of
    images plans thousands of epochs whose score stops moving after a few: there the wait is capped, at
    ``MAX_PATIENCE`` epochs (or ``PATIENCE_STEPS`` optimizer steps if that is longer and there are
    enough validation images for the score to keep moving).
    """
    cap = MAX_PATIENCE
    if val_images >= LONG_WAIT_VAL_IMAGES:
        cap = max(cap, math.ceil(PATIENCE_STEPS / max(1, steps_per_epoch)))
    return max(8, min(math.ceil(planned_epochs) + 1, cap))


class ScratchCNNTrial:
    name = "scratch_cnn"
    needs = frozenset({"small"})

    def estimate(self, plan: Plan, time_left: float) -> TrialEstimate | None:
        if not plan.scratch_pool:
            return None
        width = choose_width(plan, time_left)  # an upper bound: run() sizes it for its actual budget
        epoch = epoch_seconds(plan, width)
        minimum = min(_MAX_MIN_SECONDS, max(_MIN_TRIAL_SECONDS, _MIN_EPOCHS * epoch))
        return TrialEstimate(weight=1.0, min_seconds=minimum, epoch_seconds=epoch, batch_size=BATCH_SIZE,
                             image_size=plan.feature_size // plan.scratch_pool)

    def run(self, ctx: TrialContext) -> TrialOutcome:
        """Train ``compact_cnn`` on the input average-pooled by the plan's ``scratch_pool`` (with
        shift+flip augmentation when it sees the images many times). The exported model starts with
        the same pooling, so it takes the same input as the backbone trials and can be ensembled with
        them in one graph."""
        plan = ctx.plan
        grey = plan.data.channels == 1
        in_channels = 1 if grey else 3
        train_x, val_x = ctx.split("small")
        size = train_x.shape[-1]
        if ctx.replay is not None:
            width = int(ctx.replay.get("width", _REFERENCE_WIDTH))
        else:
            # From the reference rates scaled by the feature pass's measured speed: timing a few steps
            # of each width instead measured 0.5 s per epoch where the loop took 3 s (4k images, a busy
            # machine: the probe's one cached batch skips the data path and the evaluation).
            width = choose_width(plan, ctx.planned.budget_s)
            ctx.planned.epoch_seconds = round(epoch_seconds(plan, width), 4)
            ctx.planned.epochs = round(ctx.planned.budget_s / ctx.planned.epoch_seconds, 2)
            ctx.reporter.log(f"{self.name}: width {width}, ~{ctx.planned.epochs:.1f} epochs expected in "
                             f"{ctx.planned.budget_s:.0f}s")
        augment = (bool(ctx.replay.get("augment", True)) if ctx.replay is not None
                   else ctx.planned.epochs > AUGMENT_EPOCHS)
        torch.manual_seed(ctx.seed)
        cnn = compact_cnn(ctx.num_classes, width, in_channels=in_channels, size=size)
        net = nn.Sequential(ChannelMean(), cnn) if grey else cnn
        data = LoopData(torch.from_numpy(train_x), torch.from_numpy(ctx.y_train).long(),
                        torch.from_numpy(val_x), torch.from_numpy(ctx.y_val).long(),
                        augment=shift_flip_augment(max(1, size // 8)) if augment else None)
        patience = scratch_patience(ctx.planned.epochs, math.ceil(len(train_x) / BATCH_SIZE), len(val_x))
        config = ctx.loop_config(lr=LR, weight_decay=5e-4, batch_size=BATCH_SIZE, patience=patience)
        result = fit_classifier(net, data, config, ctx.reporter, ctx.strategy)
        probs, accuracy = result.val_probabilities, result.val_accuracy
        recorded_flip = ctx.replay is not None and bool(ctx.replay.get("flip_average"))
        use_flip = False
        # Only a network trained on mirrored images gains from averaging over them (see tta).
        if len(val_x) and ((ctx.replay is None and augment) or recorded_flip):
            flipped, _ = predict_probabilities(net, data.val_x.flip(-1), data.to_input)
            if ctx.replay is None:
                use_flip, probs, accuracy = flip_pays(probs, flipped, ctx.y_val, accuracy)
            else:  # a replay makes the recorded choice
                use_flip, probs = True, (probs + flipped) / 2
                accuracy = float((probs.argmax(1) == ctx.y_val).mean())
        if use_flip:
            ctx.reporter.log(f"{self.name}: flip-averaged predictions score {accuracy:.4f} on validation "
                             f"(plain {result.val_accuracy:.4f}); the model averages both")
        pool = plan.scratch_pool or 1
        model: nn.Module = nn.Sequential(nn.AvgPool2d(pool), net) if pool > 1 else net
        model = (FlipAverage(model) if use_flip else model).eval()
        return TrialOutcome(self.name, "scratch_cnn", "compact_cnn", ctx.feature_spec, model, accuracy,
                            probs, result.seconds, result.canceled,
                            {"epochs": result.epochs, "lr": LR, "width": width, "cnn_size": size,
                             "grey_input": grey, "flip_average": use_flip, "augment": augment,
                             "image_size": ctx.feature_spec.crop_size},
                            record={**loop_record(result), "width": width, "flip_average": use_flip,
                                    "augment": augment})
