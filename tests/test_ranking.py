"""The mechanism end to end: on a local, translation-invariant target, cnn_gap beats fcn."""

from __future__ import annotations

import torch
from optuna.trial import TrialState

from dmisearch.analysis import leaderboard
from dmisearch.runner import open_study, run_study
from dmisearch.study_file import build_spec

DOC = {
    "study": {"name": "cnn-gap-teacher", "device": "cpu"},
    "data": {"name": "teacher", "family": "cnn_gap", "shape": [1, 16], "width": 16, "depth": 1},
    "curve": {"sizes": [16, 32, 64, 128], "seeds": 3, "test_size": 256},
    "search": {
        "models": ["fcn", "cnn_gap"], "algorithms": ["adam"], "n_trials": 2, "pruner": "none",
        "space": {
            "model": {"fcn": {"width": 128, "depth": 1},
                      "cnn_gap": {"width": 16, "depth": 1, "filter_size": 3}},
            "algorithm": {"adam": {"lr": 0.01, "steps": 300, "batch_size": 32,
                                   "weight_decay": 0.0}},
        },
    },
}


def test_cnn_gap_teacher_ranks_cnn_gap_ahead_of_fcn(tmp_path, registry):
    spec = build_spec(DOC, registry, storage=f"journal:{tmp_path / 'rank.log'}")
    study = open_study(spec)
    for pair in ("fcn/adam", "cnn_gap/adam"):  # evaluate each pair once, seeds fixed
        study.enqueue_trial({"pair": pair})
    study = run_study(spec)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    board = leaderboard(study)
    assert list(board["model"]) == ["cnn_gap", "fcn"]
    gap_score, fcn_score = board["score"]
    # Measured on CPU: cnn_gap -1.9, fcn -0.30 (decades below the trivial predictor).
    assert fcn_score - gap_score > 0.8
    # The whole curve is better, not just its area: at every size, on average over seeds.
    gap_curve, fcn_curve = board["curve"]
    assert all(gap_curve[n] < fcn_curve[n] for n in DOC["curve"]["sizes"])


def test_cuda_is_used_when_asked_or_refused_clearly(registry, tiny_doc):
    tiny_doc["study"]["device"] = "cuda"
    if not torch.cuda.is_available():
        from dmisearch.errors import StudyFileError

        try:
            build_spec(tiny_doc, registry, storage="memory")
        except StudyFileError as exc:
            assert "no CUDA device is visible" in str(exc)
        else:
            raise AssertionError("device = 'cuda' accepted without CUDA")
        return
    study = run_study(build_spec(tiny_doc, registry, storage="memory", n_trials=1))
    assert study.trials[0].user_attrs["device"].startswith("cuda:")
