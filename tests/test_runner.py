"""Studies end to end in real Optuna storage: curves on trials, resume, failures, pruning."""

from __future__ import annotations

import copy
import math

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import trained
from optuna.trial import TrialState

from dmisearch.analysis import format_leaderboard, leaderboard
from dmisearch.errors import DmisearchError, StudyMismatchError
from dmisearch.metrics import aulc, floor_for
from dmisearch.objective import TRIAL_ATTRS
from dmisearch.runner import MAX_FAIL_STREAK, run_study
from dmisearch.storage import open_storage
from dmisearch.study_file import build_spec


@pytest.fixture
def journal(tmp_path) -> str:
    return f"journal:{tmp_path / 'studies.log'}"


def reload(spec) -> optuna.Study:
    return optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))


def test_trials_carry_their_full_learning_curve(tiny_doc, registry, journal):
    spec = build_spec(tiny_doc, registry, storage=journal)
    run_study(spec)
    study = reload(spec)  # read back from the file, not from memory
    trials = study.get_trials(states=[TrialState.COMPLETE])
    assert len(trials) == 3
    for t in trials:
        attrs = t.user_attrs
        assert set(TRIAL_ATTRS) <= set(attrs), set(TRIAL_ATTRS) - set(attrs)
        curve = attrs["curve"]
        assert curve["size"] == [8, 8, 16, 16] and curve["seed"] == [0, 1, 0, 1]
        assert all(e >= 0 and math.isfinite(e) for e in curve["test_error"] + curve["train_error"])
        assert t.params["pair"] == f"{attrs['model']}/{attrs['algorithm']}"
        assert attrs["packages"]["model"]["package"] == "dmisearch"
        assert attrs["packages"]["data"]["name"] == "teacher"
        assert attrs["device"] == "cpu" and attrs["metric"] == "mse"
        # the stored value is the aulc recomputed from the stored curve
        errs = np.array(curve["test_error"]).reshape(2, 2).mean(1)
        base = attrs["baseline_error"]
        assert t.value == pytest.approx(aulc(np.array([8, 16]), errs, base,
                                             floor_for("mse", 32, base)))
        assert attrs["scores"]["aulc"] == pytest.approx(t.value)
        assert sorted(t.intermediate_values) == [8, 16]
        assert attrs["model_params"]["width"] == (16 if attrs["model"] == "fcn" else 4)


def test_rerun_resumes_and_extends(tiny_doc, registry, journal):
    first = run_study(build_spec(tiny_doc, registry, storage=journal, n_trials=2))
    before = [(t.number, t.params, t.value) for t in first.trials]
    run_study(build_spec(tiny_doc, registry, storage=journal, n_trials=2))  # nothing to do
    assert len(reload(build_spec(tiny_doc, registry, storage=journal)).trials) == 2
    study = run_study(build_spec(tiny_doc, registry, storage=journal, n_trials=4))
    trained = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert len(trained) == 4 and all(t.state == TrialState.COMPLETE for t in trained)
    assert [(t.number, t.params, t.value) for t in study.trials[:2]] == before
    configs = [tuple(sorted(t.params.items())) for t in trained]
    assert len(set(configs)) == 4  # the extension replayed nothing


def test_resume_with_a_different_study_file_is_refused(tiny_doc, registry, journal):
    run_study(build_spec(tiny_doc, registry, storage=journal, n_trials=1))
    tiny_doc["data"]["noise"] = 0.5
    with pytest.raises(StudyMismatchError, match="different data"):
        run_study(build_spec(tiny_doc, registry, storage=journal))
    tiny_doc["data"]["noise"] = 0.0
    tiny_doc["search"]["space"]["algorithm"]["sgd"]["lr"] = 0.1  # spaces may change
    run_study(build_spec(tiny_doc, registry, storage=journal, n_trials=2))


def test_same_seed_same_trials_and_curves(tiny_doc, registry):
    tiny_doc["search"]["space"]["algorithm"]["sgd"]["lr"] = {"low": 0.01, "high": 0.1}
    runs = [run_study(build_spec(tiny_doc, registry, storage="memory")) for _ in range(2)]
    a, b = ([(t.params, t.user_attrs["curve"]["test_error"]) for t in r.trials] for r in runs)
    assert a == b


def _mean_test_doc(tiny_doc, algorithms, n_trials):
    tiny_doc["search"] = {"models": ["fcn"], "algorithms": algorithms, "n_trials": n_trials,
                          "seed": 0, "pruner": "none", "sampler": "random"}
    return tiny_doc


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tiny_doc, test_registry):
    doc = _mean_test_doc(tiny_doc, ["mean_test", "fail_test"], 6)
    study = run_study(build_spec(doc, test_registry, storage="memory"))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 6 and TrialState.FAIL in states
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert failed.user_attrs["error"] == "RuntimeError: plugin exploded"
    assert "fit_predict" in failed.user_attrs["traceback"]
    assert failed.user_attrs["model"] == "fcn"  # the triplet is known even for failures
    board = leaderboard(study)
    assert list(board["algorithm"]) == ["mean_test", "fail_test"]
    assert board["rank"].tolist() == [1, pd.NA] and math.isnan(board["score"][1])
    assert board["complete"].tolist() == [6, 0]
    assert board["failed"].tolist() == [0, states.count(TrialState.FAIL)]
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE),
               key=lambda t: t.value)
    assert board["trial"][0] == best.number and board["score"][0] == best.value
    assert board["params"][0] == {k: v for k, v in best.params.items() if k != "pair"}
    assert "algorithm.mean_test.shrink" in board["params"][0]
    text = format_leaderboard(board, "aulc")
    assert "flat" not in text and "teacher | fcn | fail_test" in text


def test_a_study_where_every_trial_fails_stops_with_a_summary(tiny_doc, test_registry):
    doc = _mean_test_doc(tiny_doc, ["fail_test"], 50)
    spec = build_spec(doc, test_registry, storage="memory")
    with pytest.raises(DmisearchError) as info:
        run_study(spec)
    assert f"the last {MAX_FAIL_STREAK} trials" in str(info.value)
    assert f"{MAX_FAIL_STREAK}x RuntimeError: plugin exploded" in str(info.value)


def test_divergence_prunes_with_the_reason(tiny_doc, test_registry):
    study = run_study(build_spec(_mean_test_doc(tiny_doc, ["nan_test"], 2), test_registry,
                                 storage="memory"))
    for t in study.trials:
        assert t.state == TrialState.PRUNED
        assert t.user_attrs["pruned_reason"].startswith("diverged: non-finite loss or "
                                                        "predictions at n=8, seed=0")
        # no pruner: the whole curve trained in one stage, and all of it is kept
        assert t.user_attrs["curve"]["size"] == [8, 8, 16, 16]


def test_pruner_stops_after_the_first_size(tiny_doc, test_registry):
    doc = _mean_test_doc(tiny_doc, ["mean_test"], 2)
    doc["search"]["pruner"] = {"name": "threshold", "upper": -100.0}
    study = run_study(build_spec(doc, test_registry, storage="memory"))
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert study.trials[0].user_attrs["pruned_reason"] == "pruner stopped it after n=8"


@pytest.mark.parametrize("prune_after,stopped_at", [(None, 8), ([16], 16), ([8, 16], 8)])
def test_prune_after_sets_where_the_pruner_is_asked(tiny_doc, test_registry, prune_after,
                                                     stopped_at):
    """A pruner that stops everything stops each trial at the first size of
    ``prune_after`` (by default every size but the last), with that stage's whole curve,
    and never after the largest size."""
    doc = _mean_test_doc(tiny_doc, ["mean_test"], 2)
    doc["curve"]["sizes"] = [8, 16, 24]
    doc["search"]["pruner"] = {"name": "threshold", "upper": -100.0}
    if prune_after is not None:
        doc["search"]["prune_after"] = prune_after
    study = run_study(build_spec(doc, test_registry, storage="memory"))
    for t in study.trials:
        assert t.state == TrialState.PRUNED
        assert t.user_attrs["pruned_reason"] == f"pruner stopped it after n={stopped_at}"
        assert sorted(set(t.user_attrs["curve"]["size"])) == [n for n in (8, 16)
                                                              if n <= stopped_at]
        assert sorted(t.intermediate_values) == [n for n in (8, 16) if n <= stopped_at]
    doc["search"]["prune_after"] = [8, 16]
    doc["search"]["pruner"] = {"name": "threshold", "upper": 100.0}  # stops nothing
    for t in run_study(build_spec(doc, test_registry, storage="memory")).trials:
        assert t.state == TrialState.COMPLETE and sorted(t.intermediate_values) == [8, 16, 24]


def test_interrupt_marks_the_trial_failed_and_rerun_resumes(tiny_doc, test_registry, journal,
                                                            monkeypatch):
    from testplugins import Interrupting

    spec = build_spec(_mean_test_doc(tiny_doc, ["interrupt_test"], 2), test_registry,
                      storage=journal)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec)
    (t,) = reload(spec).trials
    assert t.state == TrialState.FAIL and "interrupted" in t.user_attrs["error"]
    monkeypatch.setattr(Interrupting, "armed", False)
    study = run_study(spec)  # the same command again
    assert [t.state for t in study.trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 2


def test_n_to_target_never_reached_is_inf_and_flagged(tiny_doc, test_registry):
    doc = _mean_test_doc(tiny_doc, ["mean_test"], 1)
    doc["objective"] = {"name": "n_to_target", "target": 1e-6}
    (t,) = run_study(build_spec(doc, test_registry, storage="memory")).trials
    assert t.state == TrialState.COMPLETE and t.value == math.inf
    assert t.user_attrs["scores"]["n_to_target_status"] == "not_reached"


def test_timeout_bounds_a_run_without_n_trials(tiny_doc, test_registry):
    doc = _mean_test_doc(tiny_doc, ["mean_test"], 1)
    del doc["search"]["n_trials"]
    doc["search"]["timeout"] = 0.5
    study = run_study(build_spec(doc, test_registry, storage="memory"))
    assert len(study.trials) >= 1


def test_batched_trials_fuse_and_keep_their_own_curves(tiny_doc, registry, monkeypatch):
    from dmisearch import engine

    calls: list[int] = []
    real = engine.train
    monkeypatch.setattr(engine, "train", lambda members, ctx, **kw: calls.append(
        len(members)) or real(members, ctx, **kw))
    tiny_doc["search"]["trials_per_batch"] = 3
    tiny_doc["search"]["models"] = ["fcn"]
    del tiny_doc["search"]["space"]["model"]["cnn_gap"]
    tiny_doc["search"]["space"]["algorithm"]["sgd"]["lr"] = {"low": 0.01, "high": 0.1}
    study = run_study(build_spec(tiny_doc, registry, storage="memory"))
    assert calls == [3 * 2 * 2]  # 3 trials x 2 sizes x 2 seeds, no pruner: one call
    lrs = {t.params["algorithm.sgd.lr"] for t in study.trials}
    assert len(lrs) == 3  # different hyperparameters, one program
    # each trial's stored curve is what training it alone gives
    for t in study.trials:
        doc = copy.deepcopy(tiny_doc)
        doc["search"]["trials_per_batch"] = 1
        for name, value in t.params.items():  # fix every searched value to the trial's
            if name != "pair":
                kind, comp, param = name.split(".")
                doc["search"]["space"][kind][comp][param] = value
        (alone,) = run_study(build_spec(doc, registry, storage="memory", n_trials=1)).trials
        assert alone.user_attrs["curve"]["test_error"] == pytest.approx(
            t.user_attrs["curve"]["test_error"], rel=1e-5)


@pytest.mark.parametrize("culprit,error", [
    ("fail_test", "RuntimeError: plugin exploded"),
    ("bad_shape_test", "RuntimeError"),  # predictions of the wrong shape
])
def test_a_failing_trial_in_a_fused_batch_fails_alone(tiny_doc, test_registry, culprit, error):
    doc = _mean_test_doc(tiny_doc, ["mean_test", culprit], 8)
    doc["search"]["trials_per_batch"] = 4
    study = run_study(build_spec(doc, test_registry, storage="memory"))
    for t in study.trials:
        expected = TrialState.FAIL if t.params["pair"] == f"fcn/{culprit}" else (
            TrialState.COMPLETE)
        assert t.state == expected
        if expected == TrialState.FAIL:
            assert t.user_attrs["error"].startswith(error)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) >= 8


def test_interrupt_fails_every_trial_of_the_batch(tiny_doc, test_registry, journal):
    doc = _mean_test_doc(tiny_doc, ["interrupt_test"], 6)
    doc["search"]["trials_per_batch"] = 3
    spec = build_spec(doc, test_registry, storage=journal)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec)
    trials = reload(spec).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert all("interrupted" in t.user_attrs["error"] for t in trials)


@pytest.mark.parametrize("where", ["inside-ask", "before-training"])
def test_an_interrupt_between_ask_and_training_leaves_no_trial_running(
        where, tiny_doc, test_registry, journal, monkeypatch):
    """Ctrl-C after Optuna created a trial, before the batch reaches training (inside the
    second ``ask``, after it created its trial; or once the batch is asked): the trials
    asked so far are recorded as interrupted, none is left RUNNING (which only the
    heartbeat reaper would clear, a grace period later), and the same command resumes."""
    from dmisearch import runner

    doc = _mean_test_doc(tiny_doc, ["mean_test"], 4)
    doc["search"]["trials_per_batch"] = 3
    spec = build_spec(doc, test_registry, storage=journal)
    real_ask, real_run_batch, calls = optuna.Study.ask, runner.run_batch, []

    def ask_then_interrupt(self, *args, **kwargs):
        trial = real_ask(self, *args, **kwargs)
        calls.append(trial.number)
        if len(calls) == 2:
            raise KeyboardInterrupt("signal 2")  # as cli._interrupt raises it
        return trial

    def interrupted_batch(*args, **kwargs):
        raise KeyboardInterrupt("signal 15")

    if where == "inside-ask":
        monkeypatch.setattr(optuna.Study, "ask", ask_then_interrupt)
    else:
        monkeypatch.setattr(runner, "run_batch", interrupted_batch)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec)
    trials = reload(spec).trials
    n = 2 if where == "inside-ask" else 3
    assert [t.state for t in trials] == [TrialState.FAIL] * n
    assert all("interrupted" in t.user_attrs["error"] for t in trials)
    monkeypatch.setattr(optuna.Study, "ask", real_ask)
    monkeypatch.setattr(runner, "run_batch", real_run_batch)
    study = run_study(spec)  # the same command again
    assert [t.state for t in study.trials] == [TrialState.FAIL] * n + [TrialState.COMPLETE] * 4


def test_loop_engine_gives_the_fused_results(tiny_doc, registry):
    runs = {}
    for name in ("fused", "loop"):
        tiny_doc["study"]["engine"] = name
        runs[name] = run_study(build_spec(tiny_doc, registry, storage="memory")).trials
    for a, b in zip(runs["fused"], runs["loop"], strict=True):
        assert a.params == b.params
        assert a.user_attrs["curve"]["test_error"] == pytest.approx(
            b.user_attrs["curve"]["test_error"], rel=1e-4)


def test_pruner_trains_in_stages_and_none_trains_the_curve_at_once(tiny_doc, registry):
    from dmisearch.objective import StudyData, TrialObjective, make_context

    tiny_doc["curve"]["sizes"] = [8, 16, 24, 32]
    for pruner, prune_after, stages in (
            ("median", None, [(8,), (16,), (24,), (32,)]),
            ("median", [16], [(8, 16), (24, 32)]),
            ("median", [8, 24], [(8,), (16, 24), (32,)]),
            ("none", None, [(8, 16, 24, 32)])):
        tiny_doc["search"]["pruner"] = pruner
        tiny_doc["search"].pop("prune_after", None)
        if prune_after is not None:
            tiny_doc["search"]["prune_after"] = prune_after
        spec = build_spec(tiny_doc, registry, storage="memory")
        ctx = make_context(spec)
        assert TrialObjective(spec, StudyData.prepare(spec, ctx), ctx).stages == stages


def test_the_objective_works_in_optunas_own_optimize_loop(tiny_doc, test_registry):
    """``TrialObjective`` is a plain Optuna objective too (for users' own Optuna code)."""
    from dmisearch.objective import StudyData, TrialObjective, make_context

    doc = _mean_test_doc(tiny_doc, ["mean_test", "nan_test", "fail_test"], 1)
    spec = build_spec(doc, test_registry, storage="memory")
    ctx = make_context(spec)
    objective = TrialObjective(spec, StudyData.prepare(spec, ctx), ctx)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=12, catch=(RuntimeError,))
    states = {t.params["pair"]: t.state for t in study.trials}
    assert states == {"fcn/mean_test": TrialState.COMPLETE, "fcn/nan_test": TrialState.PRUNED,
                      "fcn/fail_test": TrialState.FAIL}


def _confirm_doc(tiny_doc):
    tiny_doc["search"]["n_trials"] = 3
    tiny_doc["search"].update(sampler="random", seed=4)  # both models among the 3 trials
    tiny_doc["search"]["space"]["algorithm"]["sgd"]["lr"] = {"low": 0.01, "high": 0.1}
    tiny_doc["confirm"] = {"top": 2, "seeds": 3}
    return tiny_doc


def test_the_confirmation_stage_retrains_the_winners_on_fresh_seeds(tiny_doc, registry,
                                                                     journal):
    from dmisearch.analysis import Results
    from dmisearch.coordination import count_states
    from dmisearch.runner import rerun_trial

    spec = build_spec(_confirm_doc(tiny_doc), registry, storage=journal)
    assert spec.confirm.seeds == (2, 3, 4)  # after the curve's seeds 0 and 1
    study = run_study(spec)
    search = [t for t in study.trials if "confirms" not in t.user_attrs]
    confirm = [t for t in study.trials if "confirms" in t.user_attrs]
    assert len(search) == 3 and len(confirm) == 2 and count_states(study)[0] == 3
    best = sorted(search, key=lambda t: t.value)
    by_triplet = {}
    for t in best:  # the best trial of each triplet, best triplet first
        by_triplet.setdefault(t.user_attrs["model"], t)
    winners = list(by_triplet.values())[:2]
    assert [c.user_attrs["confirms"] for c in confirm] == [w.number for w in winners]
    for c, w in zip(confirm, winners, strict=True):
        assert c.state == TrialState.COMPLETE and c.params == w.params
        assert sorted(set(c.user_attrs["curve"]["seed"])) == [2, 3, 4]  # fresh seeds
        assert c.intermediate_values == {}  # kept out of the pruner's statistics
        assert c.value != w.value
    assert len(run_study(spec).trials) == 5  # done: nothing is confirmed twice
    board = Results([reload(spec)]).leaderboard()
    assert sorted(board["confirmed_trial"].dropna()) == [c.number for c in confirm]
    stored, plan = rerun_trial(spec, confirm[0].number)  # reruns on its own seeds
    assert plan.curve["test_error"] == stored.user_attrs["curve"]["test_error"]


def test_an_interrupted_confirmation_resumes(tiny_doc, registry, journal, monkeypatch):
    from dmisearch.objective import TrialObjective

    spec = build_spec(_confirm_doc(tiny_doc), registry, storage=journal)
    real = TrialObjective.execute

    def interrupt_confirmations(self, plans):
        if any(p.confirmation for p in plans):
            raise KeyboardInterrupt("signal 2")
        return real(self, plans)

    monkeypatch.setattr(TrialObjective, "execute", interrupt_confirmations)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec)
    queued = [t for t in reload(spec).trials if "confirms" in t.user_attrs]
    assert [t.state for t in queued] == [TrialState.FAIL, TrialState.WAITING]
    assert "interrupted" in queued[0].user_attrs["error"]
    monkeypatch.setattr(TrialObjective, "execute", real)
    study = run_study(spec)  # the same command again
    done = [t for t in study.trials if "confirms" in t.user_attrs
            and t.state == TrialState.COMPLETE]
    assert len(done) == 2 and sum("confirms" not in t.user_attrs for t in study.trials) == 3


def test_confirm_is_validated(tiny_doc, registry):
    from dmisearch.errors import StudyFileError

    tiny_doc["confirm"] = {"top": 0, "seeds": [1, 5, 6]}
    with pytest.raises(StudyFileError, match=r"confirm.top: must be a positive"):
        build_spec(tiny_doc, registry, storage="memory")
    tiny_doc["confirm"] = {"seeds": [1, 5, 6]}
    with pytest.raises(StudyFileError, match=r"confirm.seeds: \[1\] are curve seeds"):
        build_spec(tiny_doc, registry, storage="memory")
    tiny_doc["confirm"] = {"seeds": 2}
    with pytest.raises(StudyFileError, match=r"at least 3"):
        build_spec(tiny_doc, registry, storage="memory")
    tiny_doc["confirm"] = {"top": 1}
    del tiny_doc["search"]["n_trials"]
    tiny_doc["search"]["timeout"] = 5
    with pytest.raises(StudyFileError, match=r"confirm: the confirmation stage starts when"):
        build_spec(tiny_doc, registry, storage="memory")


def _fixed_doc(tiny_doc, sampler):
    """Every hyperparameter fixed but sgd's momentum: 2 models x 2 momenta = 4 configs."""
    tiny_doc["search"].update(sampler=sampler, n_trials=50)
    tiny_doc["search"]["space"]["algorithm"]["sgd"].update(momentum=[0.0, 0.9],
                                                          weight_decay=0.0)
    tiny_doc["search"]["space"]["model"]["cnn_gap"]["filter_size"] = 3
    return tiny_doc


@pytest.mark.parametrize("sampler", ["brute_force", "grid", "random", "tpe"])
def test_a_finite_design_trains_each_configuration_once(tiny_doc, registry, journal,
                                                         sampler):
    """Exhaustive samplers (and any sampler on a small discrete space) train every
    configuration exactly once, then stop short of n_trials; a rerun adds nothing."""
    spec = build_spec(_fixed_doc(tiny_doc, sampler), registry, storage=journal)
    assert spec.space_size() == 4
    study = run_study(spec)
    runs = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert [t.state for t in runs] == [TrialState.COMPLETE] * 4
    assert len({tuple(sorted(t.params.items())) for t in runs}) == 4
    for t in study.trials:  # a repeated proposal was answered from the trial it repeats
        if "duplicate_of" in t.user_attrs:
            assert t.value == study.trials[t.user_attrs["duplicate_of"]].value
            assert "curve" not in t.user_attrs
    before = len(study.trials)
    assert len(run_study(spec).trials) == before


def test_exhaustive_designs_need_no_budget_and_refuse_continuous_ranges(tiny_doc, registry):
    from dmisearch.errors import StudyFileError

    doc = _fixed_doc(tiny_doc, "brute_force")
    del doc["search"]["n_trials"]
    spec = build_spec(doc, registry, storage="memory")
    assert spec.n_trials is None and len(run_study(spec).trials) == 4
    doc["search"]["space"]["algorithm"]["sgd"]["lr"] = {"low": 0.01, "high": 0.1}
    for sampler in ("brute_force", "grid"):
        doc["search"]["sampler"] = sampler
        with pytest.raises(StudyFileError, match=r"algorithm.sgd.lr searches a continuous"):
            build_spec(doc, registry, storage="memory")
    doc["search"]["space"]["algorithm"]["sgd"]["lr"] = [0.01, 0.1]
    doc["search"]["sampler"] = {"name": "grid", "search_space": {"pair": ["fcn/sgd"]}}
    with pytest.raises(StudyFileError, match=r"missing algorithm.sgd.lr, algorithm.sgd.momentum"):
        build_spec(doc, registry, storage="memory")
    doc["search"]["sampler"]["search_space"] = {
        "pair": ["fcn/sgd"], "algorithm.sgd.lr": [0.1], "algorithm.sgd.momentum": [0.0]}
    spec = build_spec(doc, registry, storage="memory")
    assert spec.space_size() == 1  # a grid's own points decide
    study = run_study(spec)
    assert [t.params["pair"] for t in study.trials
            if "duplicate_of" not in t.user_attrs] == ["fcn/sgd"]


def test_each_run_samples_its_own_stream_and_a_fresh_study_reproduces(tiny_doc, registry,
                                                                       journal):
    from dmisearch.coordination import SESSIONS_ATTR

    tiny_doc["search"]["space"]["algorithm"]["sgd"]["lr"] = {"low": 0.01, "high": 0.1}
    tiny_doc["search"]["sampler"] = "random"
    first = run_study(build_spec(tiny_doc, registry, storage=journal, n_trials=2))
    lrs = [t.params["algorithm.sgd.lr"] for t in first.trials]
    second = run_study(build_spec(tiny_doc, registry, storage=journal, n_trials=4))
    assert second.user_attrs[SESSIONS_ATTR] == 2
    more = [t.params["algorithm.sgd.lr"] for t in second.trials[2:]]
    assert not set(more) & set(lrs)  # the second run did not restart the first one's stream
    fresh = run_study(build_spec(tiny_doc, registry, storage="memory", n_trials=2))
    assert [t.params["algorithm.sgd.lr"] for t in fresh.trials] == lrs  # same file, same trials


def test_a_failure_while_choosing_a_configuration_fails_that_trial_and_the_streak_stops_it(
        tiny_doc, registry, monkeypatch):
    """A component that cannot be built from a suggested value fails its trial (recorded,
    under the study lock, before any training) and counts towards the failure streak."""
    from dmisearch.objective import TrialObjective

    def broken(self, trial):
        trial.suggest_categorical("pair", self.labels)
        raise ValueError("width 17 is not a multiple of 4")

    monkeypatch.setattr(TrialObjective, "plan", broken)
    spec = build_spec(tiny_doc, registry, storage="memory", n_trials=50)
    with pytest.raises(DmisearchError, match=f"the last {MAX_FAIL_STREAK} trials"):
        run_study(spec)


def test_a_changed_space_counts_only_the_configurations_it_still_holds(tiny_doc, registry,
                                                                       journal):
    """Configurations finished under an earlier space do not make a new one look done;
    brute force, which cannot walk around them, refuses the study with the fix."""
    doc = _fixed_doc(tiny_doc, "random")
    sgd = doc["search"]["space"]["algorithm"]["sgd"]
    sgd.update(momentum=0.0, steps={"low": 5, "high": 6})  # an integer range: 2 x 2 configs
    assert len(trained(run_study(build_spec(doc, registry, storage=journal)))) == 4
    sgd["steps"] = {"low": 6, "high": 7}  # 2 of its 4 configurations are new
    study = run_study(build_spec(doc, registry, storage=journal))
    steps = sorted(t.params["algorithm.sgd.steps"] for t in trained(study))
    assert steps == [5, 5, 6, 6, 7, 7]
    doc["search"]["sampler"] = "brute_force"
    with pytest.raises(DmisearchError, match=r"holds trial \d+ .* its own study"):
        run_study(build_spec(doc, registry, storage=journal))


def test_a_worker_whose_trial_was_reaped_drops_its_result_and_goes_on(tiny_doc, registry,
                                                                       journal, monkeypatch):
    """Another worker's reaper fails a trial of this one while it trains (it was silent past
    the grace period): this worker writes nothing more to it, and the study goes on."""
    from dmisearch.coordination import reap_lost_trials
    from dmisearch.objective import TrialObjective

    real = TrialObjective._run_stage
    reaped = []

    def reaped_meanwhile(self, plans, sizes):
        if not reaped:  # the first trial: silent "too long", as a SIGSTOP would leave it
            t = plans[0].trial
            reaped.append(t.number)
            reap_lost_trials(t.study, grace=-1.0)
        return real(self, plans, sizes)

    monkeypatch.setattr(TrialObjective, "_run_stage", reaped_meanwhile)
    spec = build_spec(tiny_doc, registry, storage=journal)
    lines = []
    study = run_study(spec, on_trial=lines.append)
    first = study.trials[reaped[0]]
    assert first.state == TrialState.FAIL and first.user_attrs["error"].startswith(
        "worker lost") and "curve" not in first.user_attrs  # nothing written after the reap
    assert [t.state for t in trained(study)].count(TrialState.COMPLETE) == 3
    assert any(t.user_attrs.get("retry_of") == reaped[0] for t in study.trials)
    from dmisearch.cli import _trial_line

    assert "its result is dropped" in _trial_line(spec, lines[0])


def test_rerun_of_a_failed_trial_shows_the_error_and_exits_1(tiny_doc, test_registry,
                                                             journal, capsys, monkeypatch):
    from dmisearch.cli import commands, main

    spec = build_spec(_mean_test_doc(tiny_doc, ["fail_test"], 1), test_registry,
                      storage=journal)
    with pytest.raises(DmisearchError):
        run_study(spec)  # every trial fails: the run stops after a streak
    capsys.readouterr()
    monkeypatch.setattr(commands, "_load", lambda args: spec)
    assert main(["rerun", "study.toml", "--trial", "0"]) == 1
    out, err = capsys.readouterr()
    assert "(FAIL on cpu)" in out and "rerun on cpu: failed" in out
    assert "stored error: RuntimeError: plugin exploded" in out
    assert "rerun error: RuntimeError: plugin exploded" in out
    assert "Traceback" in err and "fit_predict" in err
    assert "relative difference" not in out  # no empty table, no 0.00e+00
