"""What a stored trial is: its configuration, and whether it is evidence from the search.

A study holds three kinds of trials, told apart by user attributes:

* **search trials**: the sampler's proposals, trained on the study's curve seeds;
* **reused duplicates** (``duplicate_of``): a proposal of a configuration the study had
  already finished; its result is copied from that trial (so the sampler learns it), it
  trains nothing and is not counted again as evidence or towards ``n_trials``;
* **confirmation trials** (``confirms``): a finished configuration retrained on fresh seeds
  after the search (``[confirm]`` in the study file).

A configuration is the triplet's model and algorithm with every hyperparameter value (the
searched and the fixed ones), as recorded on the trial.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

#: Study attribute: what every run and worker of the study must agree on (data, curve grid,
#: objective...), written when the study is created.
IDENTITY_ATTR = "dmisearch_identity"
#: Study attribute: the kernel learners' predicted learning curves and spectra
#: (:func:`dmisearch.predict.stored_form`), written by ``prior = "theory"`` before trial 0
#: and by ``dmisearch predict --save``.
PREDICTIONS_ATTR = "dmisearch_predictions"
#: Trial parameter that picks the (model, algorithm) pair, e.g. "fcn/adam".
PAIR_PARAM = "pair"
DUPLICATE_ATTR = "duplicate_of"
CONFIRMS_ATTR = "confirms"
CONFIRM_SEEDS_ATTR = "confirm_seeds"  # on a confirmation trial: the seeds it trains on
#: States that finish a trial for the budget: complete or stopped by the pruner.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def config_key(model: str, algorithm: str, model_params: Mapping[str, Any],
               algorithm_params: Mapping[str, Any]) -> str:
    """One string per configuration (JSON with sorted keys: equal values, equal keys)."""
    return json.dumps([model, algorithm, dict(model_params), dict(algorithm_params)],
                      sort_keys=True, default=str)


def trial_config(t: optuna.trial.FrozenTrial) -> str | None:
    """The configuration of a stored trial; None before it chose one."""
    a = t.user_attrs
    if a.get("model") is None or a.get("model_params") is None:
        return None
    return config_key(a["model"], a["algorithm"], a["model_params"],
                      a.get("algorithm_params") or {})


def is_duplicate(t: optuna.trial.FrozenTrial) -> bool:
    return DUPLICATE_ATTR in t.user_attrs


def is_confirmation(t: optuna.trial.FrozenTrial) -> bool:
    return CONFIRMS_ATTR in t.user_attrs


def is_search(t: optuna.trial.FrozenTrial) -> bool:
    """A trial the search trained (not a reused duplicate, not a confirmation)."""
    return not is_duplicate(t) and not is_confirmation(t)
