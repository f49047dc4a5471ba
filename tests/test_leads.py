"""The leads of issue 19: each is the starting settings plus one change of the profile."""
import pytest

from analysis import config, leads


def test_each_lead_is_the_start_plus_its_own_fields():
    cfg = config.profile("smoke", pool_centre=True, tie_embeddings=True)  # a profile that moved on
    start = leads.lead_config(cfg, "start")
    assert all(getattr(start, k) == v for k, v in leads.START.items())  # back at the starting point
    assert leads.lead_config(cfg, "new default") == cfg
    for name, (_, fields) in leads.LEADS.items():
        if fields is None or name in leads.ON_PROFILE:
            continue
        c = leads.lead_config(cfg, name)
        changed = {f for f in leads.START if getattr(c, f) != getattr(start, f)}
        assert changed == {f for f in fields if f in leads.START and fields[f] != leads.START[f]}, name
        assert c.d_model == cfg.d_model and c.vocab_size == cfg.vocab_size
    assert leads.lead_config(cfg, "centred fine-tuning") == cfg.replace(finetune_centred=True)  # on the profile
    assert leads.lead_config(cfg, "longer fine-tuning") == cfg.replace(finetune_steps=3 * cfg.finetune_steps)
    with pytest.raises(ValueError, match="tasks must be some of search, types, got summarise"):
        leads.lead_row("codessm", "start", cfg, tasks=("summarise",))
    conv = leads.lead_config(cfg, "fine-tuning to convergence")
    assert conv.finetune_steps == 4 * cfg.finetune_steps and conv.finetune_eval_every > 0
    with pytest.raises(ValueError, match="unknown lead 'magic'; leads: start"):
        leads.lead_config(cfg, "magic")
