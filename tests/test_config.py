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
    with pytest.raises(ValueError, match="smoke, default, paper"):
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
