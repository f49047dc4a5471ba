"""The claims' decision rules (analysis.claims) on synthetic per-item results with known answers:
under a null (no effect, 200 seeded draws) "reproduced" at most 5% of the time, also for the
null that leaves only the hardest part of a rule undecided; a planted effect of the claimed size
is "reproduced"; too little data is "inconclusive"; the gate fails on a model no better than
unigrams or than its random-init twin. The bootstrap itself on exact cases."""
import functools

import numpy as np
import pandas as pd
import pytest

from analysis import claims

DRAWS = 200                        # draws of each null of no effect
LIMIT = int(0.05 * DRAWS)          # "reproduced" under a null at most 5% of the time
HARD = 100                         # draws of the nulls that leave only a rule's last part open
PROBES = ("distance", "siblings", "dfg")


def _grid(**levels) -> pd.DataFrame:
    """Every combination of the levels, the last varying fastest (built once per layout; callers
    add columns with ``assign``, never in place)."""
    return _grid_of(tuple((name, tuple(v)) for name, v in levels.items()))


@functools.lru_cache(maxsize=None)
def _grid_of(levels: tuple) -> pd.DataFrame:
    values = [np.asarray(v) for _, v in levels]
    at = np.indices([len(v) for v in values]).reshape(len(values), -1)
    return pd.DataFrame({name: v[i] for (name, _), v, i in zip(levels, values, at)})


def _probing(rng, n, accuracy, checkpoints=("pretrained",), layers=(1, 2)) -> pd.DataFrame:
    """Probe test pairs scored by CodeSSM, RoCoder (and any model of ``accuracy``) at each
    checkpoint: correct with probability p_item + accuracy[(model, checkpoint)] (default 0),
    p_item a difficulty shared by every model."""
    models = sorted({"codessm", "rocoder"} | {m for m, _ in accuracy})
    df = _grid(model=models, checkpoint=list(checkpoints), task=list(PROBES), layer=list(layers), item=range(n))
    cells = len(PROBES) * len(layers) * n
    base = np.tile(rng.uniform(0.3, 0.7, size=cells), len(models) * len(checkpoints))
    shift = np.repeat([accuracy.get((m, c), 0.0) for m in models for c in checkpoints], cells)
    return df.assign(correct=rng.random(len(df)) < np.clip(base + shift, 0, 1))


@pytest.fixture(scope="module")
def gate():
    """A gate every model of these tests passes: MLM far under unigram, probes far above random init."""
    models = ["codessm", "rocoder", "codessm-hf", "codessm-8kernel"]
    rng = np.random.default_rng(0)
    probing = _probing(rng, 40, {**{(m, "pretrained"): 0.3 for m in models}, **{(m, "random"): -0.3 for m in models}},
                       checkpoints=("pretrained", "random"), layers=(1,))
    mlm = pd.DataFrame({"model": models, "heldout_loss": 2.0, "unigram_loss": 6.0})
    out = claims.pretraining_gate(mlm, probing=probing)
    assert all(out.passed.values())
    return out


def _rates(verdicts) -> dict:
    return {v: sum(x.verdict == v for x in verdicts) for v in claims.VERDICTS}


# ------------------------------------------------------------------------------ bootstrap

def test_bootstrap_is_paired_by_item_and_resamples_runs_as_a_whole():
    rng = np.random.default_rng(1)
    base = rng.random(50)
    df = pd.DataFrame({"model": np.repeat(["a", "b"], 50), "task": "t", "item": np.tile(np.arange(50), 2),
                       "value": np.concatenate([base, base + 0.1])})
    point, reps, n_items = claims._bootstrap(df, "value", ["model", "task"], ["model"], "task", 500, 0)
    assert n_items == {"t": 50} and point[("b", "t")] - point[("a", "t")] == pytest.approx(0.1)
    # paired: every replicate draws the same items for both models, so the gap never varies
    np.testing.assert_allclose(reps[("b", "t")] - reps[("a", "t")], 0.1, atol=1e-12)
    # the interval of a mean of paired differences: +-1.96 SD / sqrt(n) (n = 400 items)
    d = rng.normal(0.3, 1.0, size=400)
    one = pd.DataFrame({"model": "a", "task": "t", "item": np.arange(400), "value": d})
    _, reps, _ = claims._bootstrap(one, "value", ["model", "task"], ["model"], "task", 4000, 0)
    lo, hi = claims._interval(reps[("a", "t")])
    assert (hi - lo) / 2 == pytest.approx(1.96 * d.std() / np.sqrt(400), rel=0.08)
    assert (lo + hi) / 2 == pytest.approx(d.mean(), abs=0.1 * d.std() / np.sqrt(400) * 1.96)
    # two runs, one all 0, one all 1: a replicate mean is 0, 1/2 or 1 (runs drawn 0, 1 or 2 times)
    runs = pd.DataFrame({"model": "a", "task": "t", "seed": np.repeat([0, 1], 20), "item": np.tile(np.arange(20), 2),
                         "value": np.repeat([0.0, 1.0], 20)})
    point, reps, _ = claims._bootstrap(runs, "value", ["model", "task"], ["model"], "task", 400, 0)
    assert point[("a", "t")] == 0.5 and set(np.round(reps[("a", "t")], 12)) == {0.0, 0.5, 1.0}


def test_unpaired_or_duplicated_items_are_clear_errors(gate):
    df = _probing(np.random.default_rng(2), 40, {("codessm", "pretrained"): 0, ("rocoder", "pretrained"): 0})
    with pytest.raises(ValueError, match="lacks items or runs"):
        claims.c1_probing(df.drop(index=df.index[(df.model == "rocoder") & (df.item == 3)]), gate)
    with pytest.raises(ValueError, match="scores an item twice"):
        claims.c1_probing(pd.concat([df, df.iloc[:1]]), gate)
    with pytest.raises(ValueError, match=r"lacks columns \['correct'\]"):
        claims.c1_probing(df.drop(columns="correct"), gate)
    with pytest.raises(ValueError, match="no rows with model \\['rocoder'\\]"):
        claims.c1_probing(df[df.model == "codessm"], gate)


# ------------------------------------------------------------------------------ C1

def test_c1_null_planted_and_too_little_data(gate):
    rng = np.random.default_rng(3)
    null = [claims.c1_probing(_probing(rng, 100, {}), gate, seed=k)
            for k in range(DRAWS)]
    rates = _rates(null)
    assert rates["reproduced"] <= LIMIT and rates["partly reproduced"] <= LIMIT, rates
    planted = [claims.c1_probing(_probing(rng, 300, {("codessm", "pretrained"): 0.25}), gate, seed=k)
               for k in range(10)]
    assert all(v.verdict == "reproduced" for v in planted), [v.reason for v in planted]
    few = claims.c1_probing(_probing(rng, 12, {("codessm", "pretrained"): 0.25}), gate)
    assert few.verdict == "inconclusive" and "too little data" in few.reason
    v = planted[0]
    assert set(v.intervals) == ({f"gap {t} layer {l}" for t in PROBES for l in (1, 2)} | {"mean gap"}
                                | {f"mean gap {t}" for t in PROBES})
    assert "pretraining seeds: not given" in v.noise and v.gate.startswith("passed")


# ------------------------------------------------------------------------------ C2

def _forgetting(rng, n, drops: dict) -> pd.DataFrame:
    """Probing before and after fine-tuning on each task; drops[(model, task)] = accuracy lost."""
    ft = ("search", "long_search", "types")
    acc = {(m, f"finetuned:{t}"): -drops.get((m, t), 0.0) for m in ("codessm", "rocoder") for t in ft}
    return _probing(rng, n, {**acc, ("codessm", "pretrained"): 0.0},
                    checkpoints=("pretrained", *(f"finetuned:{t}" for t in ft)), layers=(1,))


def test_c2_needs_codessm_to_forget_more_than_rocoder(gate):
    rng = np.random.default_rng(4)
    null = _rates([claims.c2_forgetting(_forgetting(rng, 100, {}), gate, seed=k) for k in range(DRAWS)])
    assert null["reproduced"] <= LIMIT and null["partly reproduced"] <= LIMIT, null
    # CodeSSM forgets most after type inference, but RoCoder forgets as much: only the
    # difference in differences is left to decide, and it is null
    both = {("codessm", "types"): 0.25, ("rocoder", "types"): 0.25}
    hard = _rates([claims.c2_forgetting(_forgetting(rng, 100, both), gate, seed=k) for k in range(HARD)])
    assert hard["reproduced"] <= 0.05 * HARD, hard
    assert hard["partly reproduced"] >= 0.95 * HARD         # it does forget: "partly"
    # per probing task each contrast has its own interval (9 of them): 400 pairs per task
    planted = [claims.c2_forgetting(_forgetting(rng, 400, {("codessm", "types"): 0.25}), gate, seed=k)
               for k in range(10)]
    assert all(v.verdict == "reproduced" for v in planted), [v.reason for v in planted]
    assert "F(codessm, types, distance) - F(rocoder, types, distance)" in planted[0].intervals
    few = claims.c2_forgetting(_forgetting(rng, 12, {("codessm", "types"): 0.25}), gate)
    assert few.verdict == "inconclusive" and "too little data" in few.reason


# ------------------------------------------------------------------------------ C3

def _spectra(rng, early_shift, late_shift, noise=0.01, layers=4, modes=16) -> pd.DataFrame:
    df = _grid(model=["codessm"], layer=range(layers), direction=["forward", "backward"], kernel=range(modes))
    before = rng.uniform(0.05, 0.25, size=len(df))
    shift = np.where(df.layer.to_numpy() < layers // 2, early_shift, late_shift)
    return df.assign(centroid_before=before, centroid_after=before + shift + rng.normal(0, noise, len(df)))


def test_c3_counts_only_shifts_above_the_floor(gate):
    rng = np.random.default_rng(5)
    null = _rates([claims.c3_spectral_shift(_spectra(rng, 0.0, 0.0), gate, seed=k) for k in range(DRAWS)])
    assert null["reproduced"] <= LIMIT and null["partly reproduced"] <= LIMIT, null
    same = _rates([claims.c3_spectral_shift(_spectra(rng, 0.05, 0.05), gate, seed=k) for k in range(HARD)])
    assert same["reproduced"] <= 0.05 * HARD and same["partly reproduced"] >= 0.95 * HARD, same
    # a shift far inside the noise of one kernel yet significant over many: below the floor
    tiny = claims.c3_spectral_shift(_spectra(rng, 0.002, 0.001, noise=0.0005), gate)
    assert tiny.intervals["mean change"][0] > 0 and tiny.verdict == "not reproduced"
    data = _spectra(rng, 0.06, 0.02)
    planted = claims.c3_spectral_shift(data, gate)
    assert planted.verdict == "reproduced", planted.reason
    # the floor: 0.2 SD of the pretrained centroids (U(0.05, 0.25): SD 0.2 / sqrt(12)), above 1% of the band
    assert planted.numbers["floor"] == pytest.approx(0.2 * np.std(data.centroid_before), rel=1e-12)
    assert planted.numbers["floor"] == pytest.approx(0.2 * 0.2 / np.sqrt(12), rel=0.15)
    assert claims.spectral_floor(np.full(10, 0.1)) == 0.005
    few = claims.c3_spectral_shift(_spectra(rng, 0.06, 0.02, layers=2, modes=2), gate)
    assert few.verdict == "inconclusive" and "too little data" in few.reason


# ------------------------------------------------------------------------------ C4

VARIANTS = ("codessm-hf", "codessm-8kernel")


def _scores(rng, n, gains: dict):
    """Per-item search (two retrieval tasks) and types results; gains[(model, task)] shifts a
    model's reciprocal rank or accuracy."""
    models = ["codessm", *VARIANTS]
    search = _grid(model=models, task=["long_search", "search"], item=range(n))
    base = np.tile(rng.beta(2, 3, size=2 * n), len(models))
    shift = np.repeat([gains.get((m, t), 0.0) for m in models for t in ("long_search", "search")], n)
    search = search.assign(reciprocal_rank=np.clip(base + shift + rng.normal(0, 0.15, len(search)), 0, 1))
    types = _grid(model=models, task=["types"], item=range(n))
    p = np.tile(rng.uniform(0.3, 0.7, size=n), len(models)) \
        + np.repeat([gains.get((m, "types"), 0.0) for m in models], n)
    return search, types.assign(correct=rng.random(len(types)) < np.clip(p, 0, 1))


def test_c4_corrects_for_the_best_variant_and_checks_the_size(gate):
    rng = np.random.default_rng(6)
    null = _rates([claims.c4_variants(*_scores(rng, 100, {}), gate, seed=k) for k in range(DRAWS)])
    assert null["reproduced"] <= LIMIT and null["partly reproduced"] <= LIMIT, null
    # clear gains on long-context retrieval and types, none on search: search alone decides
    others = {(v, t): 0.2 for v in VARIANTS for t in ("long_search", "types")}
    hard = _rates([claims.c4_variants(*_scores(rng, 100, others), gate, seed=k) for k in range(HARD)])
    assert hard["reproduced"] <= 0.05 * HARD, hard
    # a clear +2 points on search is a gain, not the claimed +6
    small = claims.c4_variants(*_scores(rng, 2000, {**others, ("codessm-hf", "search"): 0.02}), gate)
    lo, hi = small.intervals["best gain on search (codessm-hf)"]
    assert 0 < lo and hi < 0.06 and small.verdict == "partly reproduced"
    planted = [claims.c4_variants(*_scores(rng, 1000, {**others, ("codessm-8kernel", "search"): 0.06}), gate, seed=k)
               for k in range(10)]
    assert all(v.verdict == "reproduced" for v in planted), [v.reason for v in planted]
    assert "Bonferroni over 2 variants x 3 tasks" in planted[0].rule and "99.17% intervals" in planted[0].rule
    few = claims.c4_variants(*_scores(rng, 12, {**others, ("codessm-8kernel", "search"): 0.06}), gate)
    assert few.verdict == "inconclusive" and "too little data" in few.reason


# ------------------------------------------------------------------------------ C5

def _lengths(rng, n, gains: dict, seeds=(0,)) -> pd.DataFrame:
    """long_search reciprocal ranks at full length and truncated; gains[model] = full - truncated."""
    df = _grid(model=["codessm", "rocoder"], seed=list(seeds), length=["full", "truncated"], item=range(n))
    base = np.tile(rng.beta(2, 3, size=n), 2 * len(seeds) * 2)
    shift = np.repeat([gains.get(m, 0.0) if length == "full" else 0.0
                       for m in ("codessm", "rocoder") for _ in seeds for length in ("full", "truncated")], n)
    rr = np.clip(base + shift + rng.normal(0, 0.15, len(df)), 0, 1)
    return df.assign(task="long_search", reciprocal_rank=rr)


def test_c5_needs_the_ssm_to_gain_more_than_rocoder():
    rng = np.random.default_rng(7)
    null = _rates([claims.c5_extrapolation(_lengths(rng, 100, {}), seed=k) for k in range(DRAWS)])
    assert null["reproduced"] <= LIMIT and null["partly reproduced"] <= LIMIT, null
    both = _rates([claims.c5_extrapolation(_lengths(rng, 100, {"codessm": 0.1, "rocoder": 0.1}), seed=k)
                   for k in range(HARD)])
    assert both["reproduced"] <= 0.05 * HARD, both
    planted = claims.c5_extrapolation(_lengths(rng, 300, {"codessm": 0.1}))
    assert planted.verdict == "reproduced" and planted.gate.startswith("not applicable"), planted.reason
    seeds = claims.c5_extrapolation(_lengths(rng, 300, {"codessm": 0.1}, seeds=(0, 1, 2)))
    assert seeds.verdict == "reproduced" and "fine-tuning seeds: 3 (resampled)" in seeds.noise
    assert "fine-tuning seeds: 1 (one, not sampled)" in claims.c5_extrapolation(_lengths(rng, 100, {})).noise
    few = claims.c5_extrapolation(_lengths(rng, 12, {"codessm": 0.1}))
    assert few.verdict == "inconclusive" and "too little data" in few.reason


# ------------------------------------------------------------------------------ the gate

def test_the_gate_fails_a_model_no_better_than_unigrams_or_its_random_twin(gate):
    rng = np.random.default_rng(8)
    lift = {("codessm", "pretrained"): 0.2, ("rocoder", "pretrained"): 0.0,     # rocoder = its twin
            ("codessm", "random"): 0.0, ("rocoder", "random"): 0.0}
    probing = _probing(rng, 100, lift, checkpoints=("pretrained", "random"))
    mlm = pd.DataFrame({"model": ["codessm", "rocoder"], "heldout_loss": [5.61, 2.0], "unigram_loss": [5.90, 6.0]})
    g = claims.pretraining_gate(mlm, probing=probing)
    assert g.passed == {"codessm": False, "rocoder": False}
    assert "0.290 under the unigram baseline" in g.failures["codessm"]           # 5.90 - 5.61
    assert "DirectProbe accuracy lift" in g.failures["rocoder"] and "held-out" not in g.failures["rocoder"]
    means = probing.groupby(["model", "checkpoint"]).correct.mean()   # equal cells: the lift is a difference of means
    lift_codessm = means["codessm", "pretrained"] - means["codessm", "random"]
    assert g.numbers["codessm DirectProbe accuracy lift over random init"] == pytest.approx(lift_codessm)
    assert 0 < g.intervals["codessm DirectProbe accuracy lift over random init"][0] < lift_codessm
    data = _probing(rng, 60, {("codessm", "pretrained"): 0.3})
    v = claims.c1_probing(data, g)
    assert v.verdict == "inconclusive" and v.reason.startswith("pretraining did not take at this profile")
    assert v.numbers["codessm held-out MLM loss"] == 5.61 and v.gate.startswith("failed")
    judged = claims.c1_probing(data, gate)
    assert judged.verdict == "reproduced"                              # the same data, a passing gate
    # held back, the measurement is still shown beside the gate's numbers, and said to be unjudged
    assert "Measured, not judged: " + judged.reason in v.reason
    assert v.numbers["mean gap"] == judged.numbers["mean gap"] and v.intervals["mean gap"] == judged.intervals["mean gap"]
    few = claims.c1_probing(_probing(rng, 12, {("codessm", "pretrained"): 0.3}), g)  # too few to measure: nothing
    assert "too little data" in few.reason and "mean gap" not in few.numbers and "Measured" not in few.reason
    # zero-shot search is reported, never decisive: a twin far ahead there does not fail the gate
    zero_shot = _grid(model=["codessm"], init=["pretrained", "random"], task=["search"], item=range(80))
    zero_shot = zero_shot.assign(reciprocal_rank=np.where(zero_shot.init == "pretrained", 0.1, 0.4)
                                 + rng.normal(0, 0.1, 160))
    only_codessm = probing[probing.model == "codessm"]
    g = claims.pretraining_gate(mlm[:1].assign(heldout_loss=3.0), probing=only_codessm, zero_shot=zero_shot)
    assert g.passed == {"codessm": True}
    assert g.intervals["codessm zero-shot MRR lift over random init"][1] < 0 and "not required" in g.rule
    with pytest.raises(ValueError, match="random-init twin on DirectProbe"):
        claims.pretraining_gate(mlm, zero_shot=zero_shot)
    with pytest.raises(ValueError, match="no result for \\['rocoder'\\]"):
        claims.c1_probing(data, g)
