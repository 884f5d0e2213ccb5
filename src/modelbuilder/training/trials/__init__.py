"""The built-in trials of the time-budgeted search, one module each (registered in ``..registry``).

- ``linear``: a linear head on frozen backbone features (ML.NET's approach; seconds).
- ``partial_finetune``: the backbone's deeper layers plus the head on cached stem activations.
- ``scratch_cnn``: a compact CNN from scratch at the images' own resolution (small images).
- ``ensemble``: the average of earlier trials when it beats the best single one.
"""

from .base import TrialContext, TrialOutcome
from .ensemble import Ensemble, best_ensemble

__all__ = ["Ensemble", "TrialContext", "TrialOutcome", "best_ensemble"]
