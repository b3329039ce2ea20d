"""Symmetry probes (dmisearch.probe): couplings, verdicts, declarations and the command."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from dmisearch import Transform, hookimpl
from dmisearch import probe as P
from dmisearch.cli import main
from dmisearch.data import Composed, check_split
from dmisearch.plugins import load_registry
from dmisearch.probe import command as probe_command
from dmisearch.probe import witness as W
from dmisearch_builtins.algorithms import SGD, Adam
from dmisearch_builtins.architectures import CNNGAP, FCN, LCN, CNNVec
from dmisearch_builtins.data import Teacher
from dmisearch_builtins.transforms import Flip, Permute, Rotate, Shift, SignFlip

pytestmark = pytest.mark.usefixtures("one_thread")

#: Small and fast, still float64: exact comparisons hold to ~1e-15.
EXACT = P.Settings(n_train=32, n_test=32, seeds=3)
#: The statistical test needs enough seeds (the default 8) to have power.
STAT = P.Settings(n_train=64, n_test=64, seeds=8)


@pytest.fixture(scope="module")
def reg():
    return load_registry()


@pytest.fixture(scope="module")
def exact(reg):
    return P.Prober(P.make_data(reg, None), EXACT)


@pytest.fixture(scope="module")
def stat(reg):
    return P.Prober(P.make_data(reg, None), STAT)


def cell(reg, prober, model, algo, group, **model_params):
    return prober.probe(P.make_model(reg, model, model_params), P.make_algorithm(reg, algo),
                        P.make_group(reg, group))


# --------------------------------------------------------------------------------------------
# transforms: sign_flip, and the matrices the couplings use
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [Rotate(seed=2), Permute(seed=2), SignFlip(seed=2)])
@pytest.mark.parametrize("shape", [(1, 12), (2, 3, 3)])
def test_matrix_is_the_orthogonal_map_apply_performs(t, shape):
    d = math.prod(shape)
    x = torch.randn((7, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    m = t.matrix(d)
    assert m.dtype == torch.float64 and m.shape == (d, d)
    torch.testing.assert_close(m @ m.T, torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-12)
    y = t.apply(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(y.reshape(7, d), x.reshape(7, d) @ m.T, rtol=0, atol=1e-12)
    assert not torch.allclose(y, x)


def test_transforms_without_a_fixed_linear_map_have_no_matrix():
    assert Shift().matrix(8) is None and Flip().matrix(8) is None


def test_sign_flip_is_fixed_by_its_seed_and_flips_signs_only():
    x = torch.randn(50, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = SignFlip(seed=1)
    y = t.apply(x, torch.Generator().manual_seed(5))
    assert torch.equal(y, t.apply(x, torch.Generator().manual_seed(6)))  # ignores generator
    assert torch.equal(y.abs(), x.abs()) and y.dtype == x.dtype
    s = t.signs(16)
    assert set(s.tolist()) == {-1.0, 1.0}
    assert torch.equal(y.reshape(50, 16), x.reshape(50, 16) * s.float())
    assert not torch.equal(SignFlip(seed=2).signs(16), s)
    with pytest.raises(ValueError, match="seed"):
        SignFlip(seed=-1).check()
    # augmentation: fresh signs per sample
    a = t.augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a.abs(), x.abs())
    assert not torch.equal(a[0] / x[0], a[1] / x[1])


def test_sign_flip_is_registered_and_composes_as_data(reg):
    assert "sign_flip" in reg.names("transform")
    data = P.make_data(reg, "teacher+sign_flip", {"shape": [1, 8], "width": 4})
    assert isinstance(data, Composed) and data.label == "teacher+sign_flip"
    split = data.sample(5, 3, seed=0)
    assert check_split(split, data.describe(), 5, 3) is None
    plain = Teacher(shape=(1, 8), width=4).sample(5, 3, seed=0)
    signs = SignFlip().signs(8).float().reshape(1, 8)
    assert torch.equal(split.x_train, plain.x_train * signs)
    assert torch.equal(split.y_train, plain.y_train)


# --------------------------------------------------------------------------------------------
# couplings of the built-in architectures, at initialisation
# --------------------------------------------------------------------------------------------


def _build(arch, shape, seed=0):
    with torch.random.fork_rng(devices=[]), P.default_dtype(torch.float64):
        torch.manual_seed(seed)
        return arch.build(shape, 2)


@pytest.mark.parametrize("arch, transform, shape", [
    (FCN(width=8), Rotate(), (1, 10)),
    (FCN(width=8, parameterization="ntk"), Permute(), (2, 3, 3)),
    (FCN(width=8, depth=0), SignFlip(), (1, 10)),
    (LCN(width=4), SignFlip(), (1, 10)),
    (LCN(width=4, padding="zeros", filter_size=2), SignFlip(), (2, 4, 4)),
    (CNNGAP(width=4), Shift(), (1, 10)),
    (CNNGAP(width=4), Shift(), (1, 4, 5)),
])
def test_coupled_network_at_gx_equals_the_network_at_x(arch, transform, shape):
    module = _build(arch, shape)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with P.default_dtype(torch.float64):
        c = arch.couple(module, transform, shape)
    assert c is not None
    for k, v in module.state_dict().items():  # the original is left alone
        assert torch.equal(v, before[k])
    x = torch.randn((9, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    gx = transform.apply(x, torch.Generator().manual_seed(4))
    assert P.relative_gap(c(gx), module(x)) < 1e-13
    if arch.name == "cnn_gap":
        assert c is module  # invariant: the identity coupling
    else:  # a real coupling: the plain network at g.x differs
        assert P.relative_gap(module(gx), module(x)) > 1e-2


@pytest.mark.parametrize("arch, transform", [
    (FCN(), Shift()), (FCN(), Flip()), (LCN(), Rotate()), (LCN(), Permute()),
    (CNNVec(), SignFlip()), (CNNGAP(), Rotate()), (CNNGAP(padding="zeros"), Shift()),
])
def test_no_coupling_where_none_exists(arch, transform):
    shape = (1, 8)
    assert arch.couple(_build(arch, shape), transform, shape) is None


# --------------------------------------------------------------------------------------------
# the symmetries that must hold (and fail)
# --------------------------------------------------------------------------------------------


def test_fcn_sgd_is_rotation_equivariant_exactly(reg, exact):
    c = cell(reg, exact, "fcn", "sgd", "rotate")
    assert c.verdict == P.EQUIVARIANT and c.method == "coupled" and c.declared
    assert c.gap < 1e-9 and len(c.gaps) == EXACT.seeds
    assert c.error == pytest.approx(c.error_g, rel=1e-9)
    model, algo = P.make_model(reg, "fcn"), P.make_algorithm(reg, "sgd")
    (run,) = exact.base_runs(model, algo)[:1]
    assert run.losses[-20:].mean() < 0.7 * run.losses[:20].mean()  # it did train
    # Without the coupling, the same seed on g.D ends elsewhere: the coupling is what agrees.
    (plain,) = exact.run(model, algo, exact.transformed(P.make_group(reg, "rotate")), [0])
    assert P.relative_gap(plain.test, run.test) > 1e-2


def test_fcn_adam_is_not_rotation_equivariant_but_is_permutation_equivariant(reg, exact):
    c = cell(reg, exact, "fcn", "adam", "rotate")
    assert c.gap > 1e-3 and c.coupling_broke and not c.declared
    assert c.verdict != P.EQUIVARIANT and c.p_value is not None
    c = cell(reg, exact, "fcn", "adam", "permute")
    assert c.verdict == P.EQUIVARIANT and c.gap < 1e-9 and c.declared
    c = cell(reg, exact, "fcn", "adam", "sign_flip")
    assert c.verdict == P.EQUIVARIANT and c.gap < 1e-9


def test_cnn_gap_predictions_are_invariant_under_shift(reg, exact):
    c = cell(reg, exact, "cnn_gap", "sgd", "shift")
    assert c.verdict == P.EQUIVARIANT and c.method == "invariant" and c.coupling == "identity"
    assert c.gap < 1e-9 and c.declared
    # the shift moved the inputs (per sample), and predictions did not move
    moved = exact.transformed(P.make_group(reg, "shift"))
    assert not torch.equal(moved.x_test, exact.split.x_test)
    # with zeros padding the invariance, and the declaration, are gone
    c = cell(reg, exact, "cnn_gap", "sgd", "shift", padding="zeros")
    assert c.coupling is None and not c.declared and c.method == "statistical"


def test_lcn_sgd_is_not_rotation_equivariant(reg, stat):
    c = cell(reg, stat, "lcn", "sgd", "rotate")
    assert c.verdict == P.NOT_EQUIVARIANT and c.method == "statistical"
    assert c.p_value < STAT.alpha and not c.declared
    assert c.error_g[0] > c.error[0]  # rotated, the local teacher is harder for a local model


@pytest.mark.parametrize("algo", ["nngp", "ntk"])
def test_fcn_kernel_regressors_are_rotation_equivariant(reg, exact, algo):
    c = cell(reg, exact, "fcn", algo, "rotate")
    assert c.verdict == P.EQUIVARIANT and c.method == "deterministic" and c.declared
    assert c.gap < 1e-9
    c = cell(reg, exact, "lcn", algo, "rotate")  # and a local kernel is not
    assert c.verdict == P.NOT_EQUIVARIANT and c.method == "deterministic" and c.gap > 1e-2


def test_inapplicable_cells_say_why(test_registry):
    flat = P.Prober(P.make_data(test_registry, "flat_test"), EXACT)  # inputs shaped (d,)
    sgd = P.make_algorithm(test_registry, "sgd")
    c = flat.probe(P.make_model(test_registry, "lcn"), sgd, P.make_group(test_registry, "rotate"))
    assert c.verdict == P.NOT_APPLICABLE and "lcn" in c.reason
    c = flat.probe(P.make_model(test_registry, "fcn"), sgd, P.make_group(test_registry, "shift"))
    assert c.verdict == P.NOT_APPLICABLE and "transform 'shift'" in c.reason
    c = flat.probe(P.make_model(test_registry, "fcn", {"activation": "gelu"}),
                   P.make_algorithm(test_registry, "ntk"), P.make_group(test_registry, "rotate"))
    assert c.verdict == P.NOT_APPLICABLE and "gelu" in c.reason
    c = flat.probe(P.make_model(test_registry, "fcn"), sgd, P.make_group(test_registry, "rotate"))
    assert c.verdict == P.EQUIVARIANT  # fcn takes flat inputs: the probe runs there too


# --------------------------------------------------------------------------------------------
# the verdict logic and the statistical test
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, verdict, words", [
    (dict(deterministic=True, gap=1e-12, p_value=None), P.EQUIVARIANT, "agree"),
    (dict(deterministic=True, gap=1e-3, p_value=None), P.NOT_EQUIVARIANT, "differ"),
    (dict(deterministic=True, gap=1e-3, p_value=0.9), P.NOT_EQUIVARIANT, "differ"),
    (dict(deterministic=False, gap=1e-12, p_value=None), P.EQUIVARIANT, "coupled"),
    (dict(deterministic=False, gap=1e-2, p_value=0.5), P.INCONCLUSIVE, "coupling broke"),
    (dict(deterministic=False, gap=1e-2, p_value=1e-4), P.NOT_EQUIVARIANT, "broke"),
    (dict(deterministic=False, gap=None, p_value=1e-4), P.NOT_EQUIVARIANT, "differ"),
    (dict(deterministic=False, gap=None, p_value=0.011), P.INCONCLUSIVE, "proves nothing"),
    (dict(deterministic=False, gap=None, p_value=None), P.INCONCLUSIVE, "no statistical"),
    (dict(deterministic=False, gap=float("nan"), p_value=None), P.INCONCLUSIVE, "broke"),
    (dict(deterministic=True, gap=1e-12, p_value=None, diverged=True), P.INCONCLUSIVE,
     "diverged"),
])
def test_decide(kw, verdict, words):
    got, reason = P.decide(tolerance=1e-8, alpha=0.01, **kw)
    assert got == verdict and words in reason


def test_tolerance_and_alpha_are_the_thresholds():
    assert P.decide(deterministic=True, gap=2e-8, tolerance=1e-8, p_value=None,
                    alpha=0.01)[0] == P.NOT_EQUIVARIANT
    assert P.decide(deterministic=True, gap=2e-8, tolerance=1e-7, p_value=None,
                    alpha=0.01)[0] == P.EQUIVARIANT
    assert P.decide(deterministic=False, gap=None, tolerance=1e-8, p_value=0.03,
                    alpha=0.05)[0] == P.NOT_EQUIVARIANT
    assert P.Settings(dtype="float32").tol == 1e-3 and P.Settings().tol == 1e-8
    assert P.Settings(tolerance=1e-5).tol == 1e-5


def test_energy_test_rejects_a_shift_and_holds_its_level():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 20)), rng.normal(size=(8, 20))
    stat, p = P.energy_test(a, b + 1.0, resamples=999)
    assert stat > 0 and p < 0.01
    _, p = P.energy_test(a, b * 3.0, resamples=999)  # a different spread, same mean
    assert p < 0.01
    # Under equal distributions the p-value is uniform: about 10% fall below 0.1.
    ps = [P.energy_test(rng.normal(size=(6, 5)), rng.normal(size=(6, 5)), resamples=199,
                        seed=i)[1] for i in range(200)]
    assert 0.04 < np.mean(np.array(ps) < 0.1) < 0.17
    with pytest.raises(ValueError, match="at least 2"):
        P.energy_test(a[:1], b)


def test_relative_gap():
    a = torch.tensor([3.0, 4.0])
    assert P.relative_gap(a, a) == 0.0
    assert P.relative_gap(a, -a) == pytest.approx(2.0)
    assert P.relative_gap(torch.zeros(2), torch.zeros(2)) == 0.0
    assert math.isnan(P.relative_gap(a, torch.tensor([float("nan"), 0.0])))


# --------------------------------------------------------------------------------------------
# witness data, the search, and the power report
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class FCNUncoupled(FCN):
    """``fcn`` without its coupling: an equivariant pair the probe can only test
    statistically (to check the level of the statistical procedure)."""

    name = "fcn_uncoupled"
    symmetries = frozenset()

    def couple(self, module, transform, input_shape):
        return None


def test_witness_data_rescales_the_inputs_per_coordinate():
    x = torch.randn(4000, 1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    aniso = W.Witness("anisotropic", 2.0)
    y = aniso.apply(x, torch.Generator().manual_seed(1))
    ratio = (y / x).reshape(len(x), 8)
    assert torch.allclose(ratio, ratio[0].expand_as(ratio))  # one fixed scale per coordinate
    assert float(ratio[0, 0] / ratio[0, -1]) == pytest.approx(100.0)  # two decades
    assert float(ratio[0].square().mean()) == pytest.approx(1.0)  # scales: mean square 1
    assert float(y.square().mean()) == pytest.approx(float(x.square().mean()), rel=0.05)
    sparse = W.Witness("sparse", 2.0)
    y = sparse.apply(x, torch.Generator().manual_seed(1))
    kept = (y != 0).double().reshape(len(x), 8).mean(0)
    torch.testing.assert_close(kept, sparse.profile(8), atol=0.03, rtol=0)
    assert torch.equal(y, sparse.apply(x, torch.Generator().manual_seed(1)))  # reproducible
    assert float(y.square().mean()) == pytest.approx(float(x.square().mean()), rel=0.1)
    with pytest.raises(ValueError, match="kind must be one of"):
        W.Witness("dense", 2.0)
    with pytest.raises(ValueError, match="decades must be a positive number, got -1"):
        W.Witness("sparse", -1.0)


def test_the_witness_is_drawn_from_D_and_g_acts_on_it(reg):
    prober = P.Prober(P.make_data(reg, None), EXACT)
    w = W.CANDIDATES[0]
    data = prober.witness_split(w)
    assert torch.equal(data.y_train, prober.split.y_train)  # targets kept
    assert torch.equal(data.x_test, w.apply(prober.split.x_test, torch.Generator()))
    rotate = P.make_group(reg, "rotate")
    moved = prober.transformed(rotate, w)
    m = rotate.matrix(16)
    torch.testing.assert_close(moved.x_train.reshape(-1, 16), data.x_train.reshape(-1, 16) @ m.T)
    assert not torch.equal(moved.x_train, prober.transformed(rotate).x_train)


def test_power_grows_with_the_seeds_and_needs_a_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 10)), rng.normal(size=(8, 10)) + 0.7
    e = W.effect(a, b)
    assert e.energy > 0 and 0 < e.coefficient <= 1
    powers = [e.power(n, 0.005) for n in (4, 8, 16, 128)]
    assert powers == sorted(powers) and powers[-1] > 0.99
    assert e.power(3, 0.05) == 0.0  # 3 seeds cannot give p < 0.1
    n = e.seeds_for(0.005)
    assert e.power(n, 0.005) >= W.TARGET_POWER > e.power(n - 1, 0.005)
    same = W.effect(a, a[::-1])  # the same sample twice: no difference at all
    assert same.energy < 0 and same.seeds_for(0.005) is None
    assert "no number of seeds" in W.seeds_hint(same, 0.005)[1]
    assert W.min_p_value(8) == pytest.approx(2 / 12870) and W.min_p_value(10**6) == 0.0


def test_the_witness_search_keeps_its_level_where_reusing_the_pilot_would_not():
    """Under equal distributions on every candidate, testing the chosen witness on fresh
    seeds rejects at about the level; testing it on the pilot that chose it (the naive
    procedure) rejects about twice as often."""
    rng = np.random.default_rng(1)
    level, reps = 0.1, 300
    pilots: dict = {}

    def null(requests):  # every candidate: the same distribution on both sides
        out = [(rng.normal(size=(len(on_d), 6)), rng.normal(size=(len(on_g), 6)))
               for _, on_d, on_g in requests]
        for (w, _, _), samples in zip(requests, out, strict=True):
            pilots.setdefault(w.name, samples)
        return out

    def test(x, y):
        return P.energy_test(x, y, resamples=199, seed=int(rng.integers(1 << 30)))

    fresh = naive = 0
    for _ in range(reps):
        pilots.clear()
        found = W.search(null, test, seeds=8, pilot_seeds=4, level=level, first_seed=16)
        fresh += found.rejects
        naive += test(*pilots[found.witness])[1] < level
    assert fresh / reps < level + 3 * math.sqrt(level * (1 - level) / reps)  # 0.152
    assert naive / reps > 0.15  # selection on the same samples inflates the rate (~0.2)


def test_the_full_statistical_procedure_keeps_its_level_on_an_equivariant_pair(reg):
    """fcn / sgd under rotate is equivariant; without its coupling the probe tests it
    statistically (test on D, witness search, test on the witness). Over many data sets its
    false-positive rate stays within alpha (benchmarks/bench_probe_level.py: the default
    settings over 300 data sets, numbers in docs/probes.md)."""
    settings = dict(n_train=16, n_test=8, seeds=4, alpha=0.2)
    model = P.instantiate(FCNUncoupled, {}, "architecture", P.PROBE_DEFAULTS["model"])
    sgd = P.make_algorithm(reg, "sgd", {"steps": 50})
    rotate = P.make_group(reg, "rotate")
    reps, rejected, searched = 40, 0, 0
    for seed in range(reps):
        prober = P.Prober(P.make_data(reg, None), P.Settings(data_seed=seed, **settings))
        c = prober.probe(model, sgd, rotate)
        assert c.method == "statistical" and c.verdict != P.EQUIVARIANT
        rejected += c.verdict == P.NOT_EQUIVARIANT
        searched += c.witness is not None
    assert searched >= reps * 0.8  # the search ran wherever the test on D did not reject
    assert rejected <= 15  # P(Binomial(40, 0.2) > 15) < 0.003


def test_the_default_probe_of_fcn_adam_under_rotate_is_conclusive(capsys):
    """The README's example: the test on D cannot see the difference, a witness can. Fails
    with the witness search off (the verdict is then inconclusive)."""
    assert main(["probe", "--model", "fcn", "--algorithm", "adam", "--group", "rotate",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (c,) = doc["cells"]
    assert c["verdict"] == P.NOT_EQUIVARIANT and c["method"] == "statistical"
    assert doc["settings"]["witness"] is True and c["level"] == 0.005
    w = c["witness"]
    assert w["witness"] in {v.name for v in W.CANDIDATES} and w["description"]
    assert w["p_value"] < w["level"] == 0.005 and w["seeds"] == 8 and w["power"] > 0.5
    assert set(w["pilot"]) == {v.name for v in W.CANDIDATES}
    assert f"on the witness data {w['witness']}" in c["reason"]
    assert main(["probe", "--model", "fcn", "--algorithm", "adam", "--group", "rotate"]) == 0
    out = capsys.readouterr().out
    assert f"witness: {w['witness']} (the largest predicted power" in out
    assert "energy test on the witness (8 fresh seeds per side)" in out
    assert "verdict: not equivariant" in out


def test_without_the_witness_search_an_inconclusive_cell_says_how_many_seeds(capsys):
    assert main(["probe", "--model", "fcn", "--algorithm", "adam", "--group", "rotate",
                 "--no-witness", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (c,) = doc["cells"]
    assert doc["settings"]["witness"] is False and c["witness"] is None
    assert c["verdict"] == P.INCONCLUSIVE and c["level"] == 0.01
    assert c["seeds_needed"] > 8 and f"about {c['seeds_needed']} seeds per side" in c["reason"]


def test_a_data_set_the_user_names_is_not_replaced_unless_asked(capsys):
    args = ["probe", "--model", "fcn", "--algorithm", "sgd", "--group", "rotate", *SMALL]
    for extra, witness in (([], True), (["--data", "teacher"], False),
                           (["--data", "teacher", "--witness"], True)):
        assert main([*args, *extra, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["settings"]["witness"] is witness


def test_equivariant_pairs_stay_exact_with_the_search_on(reg, stat):
    assert STAT.searches and STAT.level == STAT.alpha / 2
    for model, algo, group in (("fcn", "sgd", "rotate"), ("fcn", "nngp", "rotate"),
                               ("cnn_gap", "sgd", "shift")):
        c = cell(reg, stat, model, algo, group)
        assert c.verdict == P.EQUIVARIANT and c.witness is None, (model, algo, group)


# --------------------------------------------------------------------------------------------
# declarations and --verify
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class AdamLiar(Adam):
    """Adam claiming to keep rotations' couplings (it does not)."""

    name = "adam_liar"
    symmetries = frozenset({"rotate", "permute"})


@dataclasses.dataclass(kw_only=True)
class LCNLiar(LCN):
    """An LCN claiming rotation symmetry, with no coupling to back it."""

    name = "lcn_liar"
    symmetries = frozenset({"rotate", "rotation"})


@dataclasses.dataclass(kw_only=True)
class Stretch(Transform):
    """x -> 2 x: linear, not orthogonal."""

    name = "stretch"

    def matrix(self, d, dtype=None):
        return 2 * torch.eye(d, dtype=dtype or torch.float64)

    def apply(self, x, generator):
        return 2 * x


@dataclasses.dataclass(kw_only=True)
class FCNStretch(FCN):
    """Couples under any invertible matrix: exact, but not distributed as the original."""

    name = "fcn_stretch"
    symmetries = frozenset({"stretch"})

    def couple(self, module, transform, input_shape):
        import copy

        m = transform.matrix(math.prod(input_shape))
        out = copy.deepcopy(module)
        with torch.no_grad():
            out[1].weight.copy_(out[1].weight @ torch.linalg.inv(m).to(out[1].weight.dtype))
        return out


class Liars:
    @hookimpl
    def register_algorithms(self, register):
        register(AdamLiar)

    @hookimpl
    def register_architectures(self, register):
        register(LCNLiar)
        register(FCNStretch)

    @hookimpl
    def register_transforms(self, register):
        register(Stretch)


@pytest.fixture(scope="module")
def liars():
    return load_registry(plugins=[Liars()])


def test_declaration_rule():
    data = Teacher(shape=(1, 8)).describe()
    fcn, gap, sgd, adam = FCN(width=4), CNNGAP(width=4), SGD(), Adam()
    kind = P.coupling_kind(fcn, Rotate(), data)
    assert kind == "map" and P.declares(fcn, sgd, Rotate(), kind)
    assert not P.declares(fcn, adam, Rotate(), kind)  # adam does not keep rotations
    assert P.declares(fcn, adam, Permute(), P.coupling_kind(fcn, Permute(), data))
    kind = P.coupling_kind(gap, Shift(), data)
    assert kind == "identity" and P.declares(gap, adam, Shift(), kind)  # any algorithm
    assert not P.declares(gap, adam, Rotate(), P.coupling_kind(gap, Rotate(), data))


def test_verify_flags_an_algorithm_that_does_not_keep_a_coupling(liars):
    findings = P.verify(liars, EXACT, models=["fcn"], algorithms=["adam_liar"])
    by = {(f.subject, f.group): f for f in findings}
    bad = by[("fcn / adam_liar", "rotate")]
    assert bad.status == "false" and "does not keep the coupling" in bad.detail
    assert bad.cell.gap > 1e-3
    assert by[("fcn / adam_liar", "permute")].status == "ok"  # the true half of its claim
    assert by[("architecture 'fcn'", "rotate")].status == "ok"
    assert [f for f in findings if f.status == "false"] == [bad]


def test_verify_flags_an_architecture_without_its_coupling_and_unknown_names(liars):
    findings = P.verify(liars, STAT, models=["lcn_liar"], algorithms=["sgd"])
    false = {(f.subject, f.group): f.detail for f in findings if f.status == "false"}
    assert "no coupling" in false[("architecture 'lcn_liar'", "rotate")]
    assert "did you mean 'rotate'" in false[("architecture 'lcn_liar'", "rotation")]
    # the pair its declaration makes equivariant is measured not to be
    assert "not equivariant" in false[("lcn_liar / sgd", "rotate")]


def test_verify_flags_a_coupling_that_changes_the_distribution(liars):
    (f,) = P.verify(liars, STAT, models=["fcn_stretch"], algorithms=["sgd"],
                    groups=["stretch"])
    assert f.status == "false" and "distributed differently" in f.detail


def test_verify_confirms_the_builtin_declarations(reg):
    findings = P.verify(reg, EXACT, models=["fcn", "cnn_gap", "lcn"],
                        algorithms=["sgd", "adam", "ntk"])
    assert findings and all(f.status == "ok" for f in findings), P.format_findings(findings)
    subjects = {(f.subject, f.group) for f in findings}
    assert {("fcn / sgd", "rotate"), ("fcn / adam", "permute"), ("cnn_gap / adam", "shift"),
            ("lcn / sgd", "sign_flip"), ("fcn / ntk", "rotate"),
            ("architecture 'fcn'", "rotate")} <= subjects
    assert ("fcn / adam", "rotate") not in subjects  # not declared: not checked


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------

SMALL = ["--seeds", "3", "--n-train", "32", "--n-test", "16"]


def test_probe_is_a_dmisearch_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["probe", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--verify" in out and "--all" in out and "exit codes" in out


def test_probe_one_cell_prints_the_verdict_and_its_numbers(capsys):
    assert main(["probe", "--model", "fcn", "--algorithm", "sgd", "--group", "rotate",
                 *SMALL]) == 0
    out = capsys.readouterr().out
    assert "fcn / sgd under rotate on teacher(family=lcn" in out
    assert "per-seed relative gap: max" in out and "verdict: equivariant" in out
    assert "declared equivariant: yes" in out


def test_probe_json_and_parameters(capsys):
    assert main(["probe", "--model", "fcn", "--algorithm", "adam", "--group", "rotate",
                 "-p", "model.width=8", "-p", "algorithm.lr=0.05", "--json", *SMALL]) == 0
    doc = json.loads(capsys.readouterr().out)
    (c,) = doc["cells"]
    assert c["model"] == "fcn" and c["group"] == "rotate" and c["verdict"] in P.VERDICTS
    assert c["gap"] > 1e-3 and c["p_value"] is not None and doc["settings"]["seeds"] == 3


def test_probe_all_prints_a_table(capsys):
    assert main(["probe", "--all", "--model", "fcn", "--model", "cnn_gap", "--algorithm",
                 "sgd", "--algorithm", "nngp", "--group", "rotate", "--group", "shift",
                 *SMALL]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("model / algorithm"))
    assert header.split()[-2:] == ["rotate", "shift"]
    row = next(line for line in lines if line.startswith("fcn / sgd "))
    assert row.split()[3:5] == ["EQ*", "gap"]
    row = next(line for line in lines if line.startswith("cnn_gap / nngp"))
    assert row.split()[3] == "NO" and row.split()[-3] == "EQ*"
    assert "EQ equivariant" in out


def test_probe_verify_exits_1_on_a_false_declaration(monkeypatch, liars, capsys):
    monkeypatch.setattr(probe_command, "_registry", lambda args=None: liars)
    assert main(["probe", "--verify", "--model", "fcn", "--algorithm", "adam_liar",
                 "--group", "rotate", *SMALL]) == 1
    out = capsys.readouterr().out
    assert "FALSE       fcn / adam_liar under rotate" in out and "1 false" in out
    assert main(["probe", "--verify", "--model", "fcn", "--algorithm", "sgd",
                 "--group", "rotate", "--json", *SMALL]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["false"] == 0 and {f["status"] for f in doc["findings"]} == {"ok"}


def test_probe_usage_errors(capsys):
    assert main(["probe", "--model", "fcn"]) == 1
    assert "needs --model, --algorithm and --group" in capsys.readouterr().err
    assert main(["probe", "--model", "fcn", "--algorithm", "sgd", "--group", "rotat"]) == 1
    assert "did you mean" in capsys.readouterr().err
    assert main(["probe", "--model", "fcn", "--algorithm", "sgd", "--group", "rotate",
                 "-p", "model.widht=3"]) == 1
    assert "has no parameter 'widht'" in capsys.readouterr().err
    assert main(["probe", "--all", "--seeds", "1"]) == 1
    with pytest.raises(SystemExit) as info:
        main(["probe", "--all", "--verify"])
    assert info.value.code == 2
