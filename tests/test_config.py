import pytest

from analysis import config


def test_profiles_exist_and_grow():
    smoke, default, paper = (config.profile(n) for n in ("smoke", "default", "paper"))
    assert smoke.d_model < default.d_model < paper.d_model
    assert smoke.pretrain_steps < default.pretrain_steps < paper.pretrain_steps


def test_override_and_coercion():
    cfg = config.profile("smoke", pretrain_steps="50", lr="0.01", throughput_lengths="64,128")
    assert cfg.pretrain_steps == 50 and cfg.lr == 0.01 and cfg.throughput_lengths == (64, 128)
    assert cfg.differences() == {"pretrain_steps": 50, "lr": 0.01, "throughput_lengths": (64, 128)}


def test_unknown_profile_lists_valid_names():
    with pytest.raises(ValueError, match="smoke, default, long, paper"):
        config.profile("huge")


def test_unknown_parameter_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['pretrian_steps'\].*pretrain_steps"):
        config.profile("smoke", pretrian_steps=3)


@pytest.mark.parametrize("name,value", [("pretrain_steps", "many"), ("pretrain_steps", 2.5),
                                        ("lr", "fast"), ("d_model", -4)])
def test_bad_values_are_clear_errors(name, value):
    with pytest.raises(ValueError, match=name):
        config.profile("smoke", **{name: value})


def test_subset_is_the_cache_key_material():
    cfg = config.profile("smoke")
    assert cfg.subset("d_model", "seed") == {"d_model": 32, "seed": 0}
    with pytest.raises(ValueError, match="unknown profile field"):
        cfg.subset("nope")


def test_every_field_has_a_range_and_every_profile_is_in_range():
    assert set(config.RANGES) == config.FIELD_NAMES
    for p in config.PROFILES.values():
        assert config.profile(p.name) == p


@pytest.mark.parametrize("name,value,shown", [
    ("max_length", 0, "[8, inf)"), ("max_length", 1, "[8, inf)"), ("max_length", 7, "[8, inf)"),
    ("batch_size", 0, "[1, inf)"), ("seeds", 0, "[1, inf)"),
    ("mask_prob", 0, "(0, 1)"), ("mask_prob", 1, "(0, 1)"), ("mask_prob", 2, "(0, 1)"),
    ("probe_test_fraction", 0, "(0, 1)"), ("probe_test_fraction", 5, "(0, 1)"),
    ("lr", "inf", "(0, inf)"), ("lr", "nan", "(0, inf)"), ("lr", 0, "(0, inf)"),
    ("finetune_lr", float("inf"), "(0, inf)"),
    ("dropout", 1, "[0, 1)"), ("dropout", 1.5, "[0, 1)"), ("dropout", -0.1, "[0, 1)"),
    ("d_state", 0, "[1, inf)"), ("seed", -1, "[0, 4294967295]"),
    ("low_freq_cutoff", 0.6, "(0, 0.5]"), ("throughput_lengths", "128,0", "each in [1, inf)"),
    ("corpus", "github:foo", "'pypi' or 'codesearchnet:PATH'"),
])
def test_out_of_range_values_name_the_field_the_value_and_the_range(name, value, shown):
    with pytest.raises(ValueError) as err:
        config.profile("smoke", **{name: value})
    message = str(err.value)
    assert message.startswith(f"parameter {name!r} must be") and shown in message
    got = (128, 0) if name == "throughput_lengths" else config._TYPES[name](value)  # as converted
    assert message.endswith(f"got {got!r}")


@pytest.mark.parametrize("name,value", [("max_length", 8), ("mask_prob", 0.999), ("dropout", 0.0),
                                        ("probe_test_fraction", 0.5), ("d_state", 1), ("seed", 2**32 - 1),
                                        ("low_freq_cutoff", 0.5), ("corpus", "codesearchnet:/data/x")])
def test_values_at_the_edges_of_their_ranges_are_accepted(name, value):
    assert getattr(config.profile("smoke", **{name: value}), name) == value


def test_every_numeric_field_rejects_a_value_just_outside_its_range():
    """Generated from the table: below the low end (or at an open low end), above a finite high end."""
    smoke = config.profile("smoke")
    for name, valid in config.RANGES.items():
        if not isinstance(valid, config.Range):
            continue
        step = 1 if config._TYPES[name] in (int, tuple) else 1e-9
        outside = [valid.low if valid.low_open else valid.low - step]
        if valid.high != float("inf"):
            outside.append(valid.high if valid.high_open else valid.high + step)
        for value in outside:
            value = (int(value),) if config._TYPES[name] is tuple else value
            with pytest.raises(ValueError, match=f"parameter '{name}' must be"):
                smoke.replace(**{name: value})


def test_ranges_hold_for_profiles_built_any_way():
    with pytest.raises(ValueError, match="'batch_size' must be in"):
        config.Profile(batch_size=0)
    with pytest.raises(ValueError, match="'name' must be"):
        config.profile("smoke").replace(name="")


def test_the_runner_rejects_an_out_of_range_override_before_running_anything():
    from analysis import book
    with pytest.raises(SystemExit, match=r"parameter 'max_length' must be in \[8, inf\), got 0"):
        book.parse_overrides([["max_length", "0"]])
