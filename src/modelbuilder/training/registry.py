"""The trial registry: the strategies a run may try, in the order they run.

Adding a strategy is one module (a class with the ``Trial`` protocol) plus one ``register_trial``
call. The built-in trials are registered here by ``module:attribute`` and imported only when first
used, so ``known_trial_names()`` and ``check_strategies()`` need no torch (the CLI and services validate
``--strategies``-style names with them before anything heavy starts).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import InvalidParameterError

if TYPE_CHECKING:
    from .plan import Plan, TrialEstimate
    from .trials.base import TrialContext, TrialOutcome


@runtime_checkable
class Trial(Protocol):
    """One strategy of the time-budgeted search.

    Attributes:
        name: the registry name (what ``strategies`` lists) and the trial's child-run name.
        needs: the cached arrays it trains on: ``features`` (pooled backbone features), ``stem``
            (activations of the backbone's frozen stem), ``small`` (the input pooled to the images' own
            size). The feature pass computes the union over the planned trials.

    Optional: ``report_only_outcome = True`` makes the trainer open the trial's child run only when
    ``run`` returns a model (the ensemble, which may find no combination worth keeping).
    """

    name: str
    needs: frozenset[str]

    def estimate(self, plan: Plan, time_left: float) -> TrialEstimate | None:
        """Its cost on this data and machine, or None when it does not apply (then it is not run)."""
        ...

    def run(self, ctx: TrialContext) -> TrialOutcome | None:
        """Train within ``ctx.planned.budget_s`` (or replay ``ctx.replay``); None: nothing to keep."""
        ...


_TRIALS: dict[str, Trial | str] = {}


def register_trial(trial: Trial | str, *, name: str | None = None, before: str | None = None) -> None:
    """Add (or replace) a trial. ``trial`` is an object with the ``Trial`` protocol, or
    ``"module:attribute"`` naming one (imported when first needed; give ``name`` then).
    ``before`` places it ahead of a registered trial (an ensemble must come after its members)."""
    key = name or (trial if isinstance(trial, str) else trial.name)
    if not isinstance(key, str) or not key or ":" in key:
        raise InvalidParameterError(f"A trial needs a name without ':'. Got {key!r} instead.",
                                    hint="Give the trial a 'name' attribute, or name=... when registering.")
    _TRIALS.pop(key, None)
    if before is not None and before in _TRIALS:
        items = list(_TRIALS.items())
        at = [k for k, _ in items].index(before)
        items.insert(at, (key, trial))
        _TRIALS.clear()
        _TRIALS.update(items)
    else:
        _TRIALS[key] = trial


def unregister_trial(name: str) -> None:
    """Remove a trial (no error when it is not registered)."""
    _TRIALS.pop(name, None)


def known_trial_names() -> list[str]:
    """The registered trial names, in run order."""
    return list(_TRIALS)


def check_strategies(names: Iterable[str] | None) -> tuple[str, ...] | None:
    """``names`` as a tuple when every one is registered (None or empty: every trial, returned as None).

    Raises:
        InvalidParameterError: an unknown name; the message lists the known ones.
    """
    if names is None:
        return None
    chosen = (names,) if isinstance(names, str) else tuple(names)
    if not chosen:
        return None
    unknown = [n for n in chosen if n not in _TRIALS]
    if unknown:
        raise InvalidParameterError(
            f"The 'strategies' parameter must name registered trials: {', '.join(known_trial_names())}. "
            f"Got {', '.join(repr(n) for n in unknown)} instead.",
            hint="Leave strategies out to try every trial, or pick from the list above.",
        )
    return chosen


def get_trial(name: str) -> Trial:
    """The registered trial ``name`` (importing a lazily registered one).

    Raises:
        InvalidParameterError: not registered (the message lists the known ones).
    """
    check_strategies((name,))
    entry = _TRIALS[name]
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)()
        _TRIALS[name] = entry
    return entry


for _name, _target in (
    ("linear", "modelbuilder.training.trials.linear:LinearTrial"),
    ("midlevel_linear", "modelbuilder.training.trials.midlevel:MidlevelLinearTrial"),
    ("partial_finetune", "modelbuilder.training.trials.partial:PartialFinetuneTrial"),
    ("scratch_cnn", "modelbuilder.training.trials.scratch:ScratchCNNTrial"),
    ("ensemble", "modelbuilder.training.trials.ensemble:EnsembleTrial"),
):
    register_trial(_target, name=_name)

__all__ = ["Trial", "check_strategies", "get_trial", "known_trial_names", "register_trial",
           "unregister_trial"]
