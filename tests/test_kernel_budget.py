"""The kernel learners' cost before trial 0: refused when it cannot fit, said, and warned
about past an hour with the options (dmisearch.kernel_budget)."""

from __future__ import annotations

import pytest
import torch

from dmisearch import kernel_budget
from dmisearch.components import Split
from dmisearch.errors import DmisearchError
from dmisearch.progress import clock
from dmisearch.runner import open_study, run_study
from dmisearch.study_file import build_spec
from dmisearch_builtins.architectures import FAMILIES

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def kernel_doc(doc, sizes=(500, 1000), algorithm="ntk", **algo_space):
    doc["curve"] = {"sizes": list(sizes), "seeds": 2, "test_size": 200}
    doc["search"].update(pairs=[["fcn", algorithm]], n_trials=1, sampler="random")
    doc["search"].pop("models"), doc["search"].pop("algorithms")
    doc["search"]["space"] = {"model": {"fcn": {"depth": 1}},
                              "algorithm": {algorithm: {"ridge": 1e-3, **algo_space}}}
    return doc


@pytest.fixture
def per_entry(monkeypatch):
    """fcn's estimate: 0.1 ms per kernel entry (exact:
    the Gram matrix's upper half; a rectangle whole)."""
    calls = []

    def seconds(self, shape, n, kind, device="cpu", n2=None):
        calls.append((n, n2))
        return 1e-4 * (n * (n + 1) / 2 if n2 is None else n * n2)

    monkeypatch.setattr(FAMILIES["fcn"], "kernel_seconds", seconds)
    return calls


def test_the_estimate_is_said_before_trial_0(tiny_doc, registry, per_entry):
    notes = []
    spec = build_spec(kernel_doc(tiny_doc), registry, storage="memory")
    study = run_study(spec, note=notes.append)
    line = next(n for n in notes if n.startswith("kernels on cpu"))
    assert len(study.trials) == 1
    # one draw: 1000 x 1001 / 2 + 200 x 1000 entries at 0.1 ms (70 s), 2 distinct draws
    # (the teacher draws new inputs per seed; no [confirm])
    per_draw = 1e-4 * (1000 * 1001 / 2 + 200 * 1000)
    assert f"fcn/ntk {clock(per_draw)} a draw" in line
    assert f"about {clock(2 * per_draw)} in all" in line
    assert "2 distinct draws of 1000 training and 200 test inputs among 2 seeds" in line
    assert not any(n.startswith("warning") for n in notes)
    assert set(per_entry) == {(1000, None), (200, 1000)}


def test_a_complete_study_estimates_nothing(tiny_doc, registry, per_entry, tmp_path):
    """Run again on a complete study, nothing trains: no kernel estimate is said."""
    doc = kernel_doc(tiny_doc)
    storage = f"journal:{tmp_path / 'j.log'}"
    notes = []
    run_study(build_spec(doc, registry, storage=storage), note=notes.append)
    assert any(n.startswith("kernels on cpu") for n in notes) and per_entry
    notes.clear(), per_entry.clear()
    study = run_study(build_spec(doc, registry, storage=storage), note=notes.append)
    assert len(study.trials) == 1
    assert not any(n.startswith("kernels on") for n in notes) and per_entry == []


def test_small_studies_are_not_checked(tiny_doc, registry, per_entry):
    notes = []
    run_study(build_spec(kernel_doc(tiny_doc, sizes=(16, 32)), registry, storage="memory"),
              note=notes.append)
    assert per_entry == [] and not any("kernels on" in n for n in notes)


def test_hours_of_kernels_warn_with_the_options(tiny_doc, registry, monkeypatch):
    monkeypatch.setattr(FAMILIES["fcn"], "kernel_seconds",
                        lambda self, shape, n, kind, device="cpu", n2=None: 3000.0)
    notes = []
    spec = build_spec(kernel_doc(tiny_doc), registry, storage="memory")
    run_study(spec, note=notes.append)  # warned, not refused: the trial runs
    (warning,) = [n for n in notes if n.startswith("warning")]
    # 2 estimates of 3000 s a draw (the Gram matrix and the test rows), 2 draws: 12000 s
    assert "kernels alone take about 3 h 20 min on cpu" in warning
    assert 'approximation = "nystrom", landmarks = 500' in warning
    assert 'device = "cuda"' in warning
    assert "a largest training size of" in warning


def test_a_library_caller_without_notes_gets_a_warning(tiny_doc, registry, monkeypatch):
    monkeypatch.setattr(FAMILIES["fcn"], "kernel_seconds",
                        lambda self, shape, n, kind, device="cpu", n2=None: 3000.0)
    spec = build_spec(kernel_doc(tiny_doc), registry, storage="memory")
    with pytest.warns(UserWarning, match="kernels alone take about"):
        run_study(spec)


def test_kernels_that_cannot_fit_are_refused_before_trial_0(tiny_doc, registry, monkeypatch,
                                                             per_entry, tmp_path):
    # 3 copies of 1000 x 1000 plus 200 x 1000 float64: 25.6 MB; 10 MB available
    monkeypatch.setattr(kernel_budget, "available_memory", lambda device: 10_000_000)
    spec = build_spec(kernel_doc(tiny_doc), registry, storage=f"journal:{tmp_path}/j.log")
    with pytest.raises(DmisearchError) as err:
        run_study(spec)
    text = str(err.value)
    assert "fcn/ntk: the exact kernels of 1000 training and 200 test inputs need about" in text
    assert "nothing was run" in text
    # what fits: m landmarks with 8 (3 x 1000 m + 200 m + m^2) <= 1e7 -> m <= 352
    assert 'approximation = "nystrom" with landmarks = 350 under ' \
           "[search.space.algorithm.ntk]" in text
    # a pool that fits exactly: 8 (3 s^2 + 200 s) <= 1e7 -> s <= 612
    assert "a largest training size of 610 or less" in text
    assert open_study(spec, create=False).trials == []


def test_the_approximation_is_sized_as_it_computes(tiny_doc, registry, per_entry):
    spec = build_spec(kernel_doc(tiny_doc, approximation="nystrom", landmarks=300),
                      registry, storage="memory")
    (cost,) = kernel_budget.check(spec, CPU, lambda: [], None)
    assert cost.landmarks == 300 and set(per_entry) == {(1200, 300)}
    assert cost.nbytes == 8 * (3 * 1000 * 300 + 200 * 300 + 300 * 300)


def test_augmentation_multiplies_the_columns_by_the_orbit(tiny_doc, registry, per_entry):
    tiny_doc["data"]["shape"] = [1, 8]
    spec = build_spec(kernel_doc(tiny_doc, algorithm="ntk+shift"), registry,
                      storage="memory")
    (cost,) = kernel_budget.check(spec, CPU, lambda: [], None)
    assert cost.group == 8 and set(per_entry) == {(1200, 8000)}


def _split(x, xt):
    return Split(x, torch.zeros(len(x)), xt, torch.zeros(len(xt)))


def test_draws_holding_the_same_inputs_count_once():
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(50, 1, 4, generator=g), torch.randn(9, 1, 4, generator=g)
    perm, perm_t = torch.randperm(50, generator=g), torch.randperm(9, generator=g)
    same = kernel_budget._fingerprint(_split(x, xt), 50)
    assert kernel_budget._fingerprint(_split(x[perm], xt[perm_t]), 50) == same
    other = x.clone()
    other[7, 0, 1] += 1e-6
    assert kernel_budget._fingerprint(_split(other, xt), 50) != same
    # only the pool's first n (the largest size) count
    assert kernel_budget._fingerprint(_split(torch.cat([x, other]), xt), 50) == same


def test_the_builtin_estimate_is_linear_in_entries(monkeypatch):
    from dmisearch_builtins import kernels

    monkeypatch.setattr(kernels, "_probe", lambda *args: (0.0, 1e-9))
    monkeypatch.setattr(kernels, "_PROBED", {})
    arch = FAMILIES["fcn"](depth=1)
    gram = kernel_budget.kernel_seconds(arch, "ntk", (1, 8), 1000, 200, None, 1, CPU)
    half = kernel_budget.kernel_seconds(arch, "ntk", (1, 8), 1000, 200, 500, 1, CPU)
    # the approximation: a rectangle of (N + T) x m entries; exact: at least the Gram
    # matrix's upper half (whole blocks on the diagonal) and the test rows
    assert half == pytest.approx(1e-9 * 1200 * 500)
    assert 1e-9 * (1000 * 1001 / 2 + 200 * 1000) <= gram <= 1e-9 * (1000 * 1000 + 200 * 1000)


def test_largest_rounds_down_to_two_digits():
    assert kernel_budget._largest(lambda s: s <= 6127, 10_000) == 6100
    assert kernel_budget._largest(lambda s: s <= 38, 1000) == 38
    assert kernel_budget._largest(lambda s: False, 1000) is None
