"""``partial_finetune``: the backbone's deeper layers plus the head, trained on cached activations of
its frozen stem (each epoch costs a fraction of full fine-tuning), warm-started from the linear head."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..loop import LoopData, fit_classifier
from ..plan import Plan, TrialEstimate
from .augment import flip_augment
from .base import TrialContext, TrialOutcome, loop_record
from .linear import train_linear_head

#: Pretrained layers learn at this fraction of the head's rate: fast enough to adapt in a few epochs,
#: slow enough not to wreck the features the warm-started head relies on.
TAIL_LR_SCALE = 0.2
LR = 1e-3
BATCH_SIZE = 64
MIN_SECONDS = 3.0
#: Where a from-scratch CNN competes for the time (small images), fewer passes over the data than this
#: do not pay: on 48k 28x28 images a third of an epoch (152 s) reached 88.8% validation accuracy, the
#: CNN 89.1% in 253 s, and the CNN gains more from the extra time.
MIN_EPOCHS = 3
#: Training the tail costs about this many feature passes per image (forward + backward of the tail).
TAIL_COST = 4.0


class PartialFinetuneTrial:
    name = "partial_finetune"
    needs = frozenset({"stem", "features"})  # features: refit the warm-start head after a resume

    def estimate(self, plan: Plan, time_left: float) -> TrialEstimate | None:
        if plan.feature_rate <= 0:
            return None
        epoch = TAIL_COST * plan.num_train / plan.feature_rate
        # Next to a from-scratch CNN (weight 1) it takes 60% of the time, or 35% when that cannot show
        # it the training set MIN_EPOCHS times; with less than that it is dropped and the time goes to
        # the trials that make better use of it. Without a CNN (large images) any epoch beats the linear
        # head alone.
        share = 0.6 if MIN_EPOCHS * epoch <= 0.6 * time_left else 0.35
        minimum = max(MIN_SECONDS, MIN_EPOCHS * epoch) if plan.scratch_pool else MIN_SECONDS
        return TrialEstimate(weight=share / (1 - share), min_seconds=minimum, epoch_seconds=epoch,
                             batch_size=BATCH_SIZE, image_size=plan.feature_size)

    def run(self, ctx: TrialContext) -> TrialOutcome:
        linear = ctx.outcomes.get("linear")
        if linear is not None and linear.head is not None:
            init_head = linear.head
        else:  # resumed after the linear trial: refit the (seconds-cheap) head from the cached features
            train_f, val_f = ctx.split("features")
            init_head = train_linear_head(train_f, ctx.y_train, val_f, ctx.y_val, ctx.num_classes,
                                          ctx.seed).unfolded
        torch.manual_seed(ctx.seed)
        head = copy.deepcopy(init_head)
        tail = copy.deepcopy(ctx.tail)
        trainable = nn.Sequential(tail, nn.Dropout(0.2), head)
        train_x, val_x = ctx.split("stem")
        data = LoopData(torch.from_numpy(train_x), torch.from_numpy(ctx.y_train).long(),
                        torch.from_numpy(val_x), torch.from_numpy(ctx.y_val).long(), augment=flip_augment)
        config = ctx.loop_config(lr=LR, batch_size=BATCH_SIZE,
                                 freeze_batchnorm=True,  # batch statistics would undo the warm-started head
                                 lr_scales=((tail, TAIL_LR_SCALE),))
        result = fit_classifier(trainable, data, config, ctx.reporter, ctx.strategy)
        model = nn.Sequential(copy.deepcopy(ctx.stem), trainable).eval()
        return TrialOutcome(self.name, "partial_finetune", ctx.plan.backbone, ctx.feature_spec, model,
                            result.val_accuracy, result.val_probabilities, result.seconds, result.canceled,
                            {"epochs": result.epochs, "lr": LR, "image_size": ctx.feature_spec.crop_size},
                            record=loop_record(result))
