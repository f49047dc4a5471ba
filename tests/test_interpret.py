"""analysis.interpret: kernel spectra against known answers and the closed-form transfer
function, spectral shifts, and BiMamba's hidden attention against its own selective scan."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis import config
from analysis.interpret import (attention_from_scan_inputs, effective_kernels, hidden_attention, lti_kernels,
                                median_step_size, spectral_shift, spectral_statistics, spectrum,
                                transfer_function)
from analysis.models import build
from analysis.models.s4d import kernel_from_modes
from analysis.models.scan import selective_scan_ref

SMOKE = config.profile("smoke")
VOCAB = 60


def _one_mode(radius, angle=0.0, cdb=0.3 + 0.2j, L=256):
    dA = torch.tensor([[radius * complex(math.cos(angle), math.sin(angle))]], dtype=torch.complex128)
    CdB = torch.tensor([[cdb]], dtype=torch.complex128)
    return (dA, CdB), kernel_from_modes(dA, CdB, L)                 # kernel [1, L] float64


def _rel(a, b):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return ((a - b).abs().max() / b.abs().max()).item()


def test_fft_spectrum_matches_the_closed_form_once_the_kernel_has_decayed():
    modes, k = _one_mode(0.8, 0.7, L=200)                           # 0.8^200 ~ 4e-20
    for n_fft in (None, 512):
        s = spectrum(k, n_fft=n_fft)
        assert _rel(s.response, transfer_function(modes, s.freqs)) < 1e-4
        assert _rel(transfer_function(modes, omega=2 * np.pi * s.freqs), transfer_function(modes, s.freqs)) < 1e-12
    # a slowly decaying kernel: only the truncated closed form matches (the 1 - dA^L e^{-iwL} factor)
    modes, k = _one_mode(0.99, 0.3, L=64)
    s = spectrum(k, n_fft=100)
    assert _rel(s.response, transfer_function(modes, s.freqs)) > 1e-2
    assert _rel(s.response, transfer_function(modes, s.freqs, length=64)) < 1e-10


def test_faster_decay_is_higher_frequency_and_shorter():
    _, slow = _one_mode(0.95, cdb=1.0)
    _, fast = _one_mode(0.6, cdb=1.0)
    s = spectrum(torch.cat([slow, fast]))
    assert s.centroid[1] > s.centroid[0]
    assert s.low_freq_fraction[1] < s.low_freq_fraction[0]
    assert s.effective_length[1] < s.effective_length[0]
    # effective length: 90% of the energy of a^(2l) lies in the first n+1 taps, n = ceil(log 0.1 / log a^2) - 1
    for a, n in zip((0.95, 0.6), s.effective_length):
        assert n == math.ceil(math.log(0.1) / math.log(a * a)) - 1
    assert list(s.filter_type) == ["low-pass", "low-pass"]
    assert np.allclose(s.power.sum(-1), 1)


def test_known_answers_delay_constant_alternating_resonant():
    L = 32
    delay = torch.zeros(L)
    delay[5] = 1.0
    s = spectrum(delay, n_fft=64)
    assert np.allclose(s.magnitude, 1.0) and s.filter_type == "all-pass" and s.effective_length == 5
    assert np.isclose(s.centroid, 0.25)                                  # energy spread evenly over [0, 1/2]
    const = spectrum(torch.ones(L))
    assert np.isclose(const.power[0], 1.0) and np.isclose(const.centroid, 0.0)
    assert np.isclose(const.low_freq_fraction, 1.0) and const.filter_type == "low-pass"
    assert const.effective_length == math.ceil(0.9 * L) - 1
    alternating = spectrum((-0.5) ** torch.arange(L, dtype=torch.float64))
    assert alternating.filter_type == "high-pass" and alternating.peak_freq == 0.5
    _, resonant = _one_mode(0.9, 2 * math.pi * 0.25, cdb=1.0, L=128)
    r = spectrum(resonant)
    assert r.filter_type == "band-pass" and abs(r.peak_freq - 0.25) < 1 / 128 + 1e-12
    # Parseval with the one-sided weights: sum_m w_m |H_m|^2 = n_fft sum k^2
    k = torch.randn(3, L, dtype=torch.float64)
    s = spectrum(k, n_fft=45)
    w = np.r_[1, np.full(len(s.freqs) - 1, 2.0)]
    assert np.allclose((w * s.magnitude ** 2).sum(-1), 45 * s.energy)


def test_zero_kernel_is_a_clear_error():
    k = torch.randn(2, 3, 16)
    k[1, 2] = 0
    with pytest.raises(ValueError, match=r"zero energy.*\(1, 2\)"):
        spectrum(k)
    with pytest.raises(ValueError, match="n_fft"):
        spectrum(torch.ones(8), n_fft=4)


def test_statistics_table_is_tidy():
    k = torch.randn(2, 2, 3, 20)
    df = spectral_statistics(k)
    assert len(df) == 12 and list(df.columns[:3]) == ["layer", "direction", "kernel"]
    assert df[["layer", "direction", "kernel"]].drop_duplicates().shape[0] == 12
    assert df.loc[(df.layer == 1) & (df.direction == 0) & (df.kernel == 2), "centroid"].item() == \
        pytest.approx(spectrum(k[1, 0, 2]).centroid.item())


@pytest.mark.parametrize("name", ["codessm", "codessm-8kernel"])
def test_codessm_kernels_match_the_transfer_function(name):
    model = build(name, SMOKE, VOCAB).eval()
    L = 64
    s = spectrum(model.kernels(L), n_fft=128)
    H = transfer_function(model.discrete_modes(), s.freqs, length=L)
    assert H.shape == s.response.shape
    assert _rel(s.response, H) < 1e-4                                    # the truncated closed form, any dt
    with torch.no_grad():                                                # dt = 2: |dA| = e^{-1}, decayed within L
        for layer in model.base_model.layers:
            for ssm in (layer.fs4, layer.bs4):
                ssm.kernel.log_step.fill_(math.log(2.0))
    s = spectrum(model.kernels(L), n_fft=128)
    assert _rel(s.response, transfer_function(model.discrete_modes(), s.freqs)) < 1e-4
    with torch.no_grad():                                                # dA underflows to 0: one tap
        model.base_model.layers[0].fs4.kernel.A_re.fill_(-1e13)
    s = spectrum(model.kernels(L), n_fft=128)
    H = transfer_function(model.discrete_modes(), s.freqs, length=L)
    assert torch.isfinite(H).all() and _rel(s.response, H) < 1e-4
    assert s.filter_type[0, 0, 0] == "all-pass"


def _decaying_kernels(radii, L=64):
    dA = torch.as_tensor(radii, dtype=torch.complex128)[..., None]
    CdB = torch.ones_like(dA)
    return dA, kernel_from_modes(dA, CdB, L)


def test_spectral_shift_identical_and_faster_decay():
    g = torch.Generator().manual_seed(0)
    radii = 0.8 + 0.15 * torch.rand(2, 2, 8, generator=g, dtype=torch.float64)   # [layers, dirs, kernels]
    _, before = _decaying_kernels(radii)
    same = spectral_shift(before, before.clone())
    assert len(same) == 2 * 2 * 3 and (same.change == 0).all()
    assert (same.test == "no change").all() and (same.p_value == 1).all()
    _, after = _decaying_kernels(radii ** 2)                                     # faster decay
    shift = spectral_shift(before, after)
    cent = shift[shift.statistic == "centroid"]
    assert (cent.change > 0).all() and (cent.p_value < 0.05).all() and (cent.ci_low > 0).all()
    assert (cent.test == "wilcoxon signed-rank").all()
    eff = shift[shift.statistic == "effective_length"]
    assert (eff.change < 0).all()
    pooled = spectral_shift(before, after, pool_layers=True)
    assert list(pooled.layer.unique()) == ["all"] and (pooled.n == 16).all()
    # one kernel per layer and direction (plain CodeSSM): no p-value invented
    model = build("codessm", SMOKE, VOCAB)
    small = spectral_shift(model.kernels(32), model.kernels(32) * 0.5 + 0.1 * torch.randn(2, 2, 1, 32))
    assert small.p_value.isna().all() and small.test.str.startswith("n too small").all()
    assert small.ci_low.isna().all() and (small.n == 1).all()


def _padded_batch():
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(5, VOCAB, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    ids[0, 8:] = 0
    return ids, mask


@pytest.mark.parametrize("sharpen", [False, True])
def test_hidden_attention_reproduces_the_selective_scan(sharpen):
    model = build("bimamba", SMOKE, VOCAB).eval()
    if sharpen:  # larger |A| and step sizes: the decay matters over a few tokens
        with torch.no_grad():
            for layer in model.base_model.layers:
                for mixer in (layer.mixer_f, layer.mixer_b):
                    mixer.A_log.add_(1.0)
                    mixer.dt_proj.bias.add_(3.0)
    ids, mask = _padded_batch()
    real = mask.bool()[:, None, :]
    scans = model.scan_inputs(ids, mask)
    for layer in range(SMOKE.n_layers):
        for direction in ("forward", "backward"):
            inputs = scans[layer][direction]
            alpha = hidden_attention(model, ids, mask, layer, direction)
            u, D = inputs["u"].float(), inputs["D"]
            assert alpha.shape == (2, u.shape[1], 12, 12)
            assert (alpha.triu(1) == 0).all()
            y = torch.einsum("bcij,bcj->bci", alpha, u) + D[:, None] * u
            ref = selective_scan_ref(**{**inputs, "z": None})
            err = ((y - ref).abs() * real).max() / ref.abs().max()
            assert err < 1e-4, (layer, direction, err.item())
            gated = selective_scan_ref(**inputs)
            assert (((y * F.silu(inputs["z"]) - gated).abs() * real).max() / gated.abs().max()) < 1e-4
            assert (alpha[0, :, 8:] == 0).all() and (alpha[0, :, :, 8:] == 0).all()
    # padding changes nothing at real positions: the short sequence alone gives the same block
    alone = hidden_attention(model, ids[:1, :8], None, 1, "backward")
    assert torch.allclose(alone[0], hidden_attention(model, ids, mask, 1, "backward")[0, :, :8, :8], atol=1e-6)


def test_token_order_and_channel_subset():
    model = build("bimamba", SMOKE, VOCAB).eval()
    ids, mask = _padded_batch()
    scan = hidden_attention(model, ids, mask, 0, "backward")
    tok = hidden_attention(model, ids, mask, 0, "backward", token_order=True)
    assert (tok.tril(-1) == 0).all()                                   # anti-causal in token order
    n = 8                                                               # sequence 0 has 8 real tokens
    assert torch.equal(tok[0, :, :n, :n], scan[0, :, :n, :n].flip(-1).flip(-2))
    sub = hidden_attention(model, ids, mask, 0, 1, channels=slice(3, 7))
    assert torch.equal(sub, scan[:, 3:7])


def test_effective_kernels_recover_a_toeplitz_kernel():
    L = 10
    k = torch.randn(2, 3, L)
    i, j = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
    alpha = torch.where(i >= j, k[..., (i - j).clamp(min=0)], torch.zeros(()))   # [2, 3, L, L]
    assert torch.allclose(effective_kernels(alpha), k)
    mask = torch.ones(2, L, dtype=torch.long)
    mask[1, 6:] = 0
    alpha[1, :, 6:], alpha[1, :, :, 6:] = 0, 0
    eff = effective_kernels(alpha, mask)
    assert torch.allclose(eff[0], k[0]) and torch.allclose(eff[1, :, :6], k[1, :, :6])
    assert (eff[1, :, 6:] == 0).all()


def test_lti_kernels_and_median_step_size():
    model = build("bimamba", SMOKE, VOCAB).eval()
    ids, mask = _padded_batch()
    delta = median_step_size(model, ids, mask, 1, "forward")
    di = SMOKE.d_model * SMOKE.mamba_expand
    assert delta.shape == (di,) and (delta > 0).all()
    raw = model.scan_inputs(ids, mask)[1]["forward"]["delta"]
    dt = F.softplus(raw + model.base_model.layers[1].mixer_f.dt_proj.bias[:, None])
    assert torch.allclose(delta[0], dt[:, 0][mask.bool()].median())
    K = lti_kernels(model, 1, "forward", delta, 20)
    assert K.shape == (di, 20)
    assert torch.allclose(K[:, 0], torch.full((di,), float(SMOKE.mamba_d_state)))
    A = -torch.exp(model.base_model.layers[1].mixer_f.A_log)
    assert torch.allclose(K[4, 7], torch.exp(7 * delta[4] * A[4]).sum())
    assert (K[:, 1:] <= K[:, :-1]).all()                               # pure decay
    # the effective kernel of the attention goes through the spectrum
    eff = effective_kernels(hidden_attention(model, ids, mask, 1, "forward"), mask)
    assert spectrum(eff).centroid.shape == (2, di)


def test_attention_from_grouped_inputs_matches_the_scan():
    g = torch.Generator().manual_seed(2)
    b, d, n, L, G = 2, 4, 3, 9, 2
    u, delta, z = (torch.randn(b, d, L, generator=g) for _ in range(3))
    A = -torch.rand(d, n, generator=g) * 3
    B, C = torch.randn(b, G, n, L, generator=g), torch.randn(b, G, n, L, generator=g)
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g)
    inputs = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias, delta_softplus=True)
    alpha = attention_from_scan_inputs(inputs, dtype=torch.float64)
    y = torch.einsum("bcij,bcj->bci", alpha, u.double()) + D[:, None].double() * u
    ref = selective_scan_ref(**{**inputs, "z": None})
    assert torch.allclose(y.float(), ref, atol=1e-5)


def test_mode_kernels_sum_to_the_kernels_and_shift_tables_see_no_change_on_equal_models():
    from analysis.interpret import mode_kernels, shift_tables
    model = build("codessm-8kernel", SMOKE, VOCAB)
    L = 48
    modes = mode_kernels(model, L)                                   # [layers, 2, 8 * M, L]
    M = SMOKE.d_state
    assert modes.shape == (SMOKE.n_layers, 2, 8 * M, L)
    summed = modes.reshape(SMOKE.n_layers, 2, 8, M, L).sum(3)
    assert torch.allclose(summed, model.kernels(L), atol=1e-6)
    k = model.kernels(L)
    whole, pooled, per_mode = shift_tables(k, {"t": k.clone()}, modes, {"t": modes.clone()}, f0=0.05)
    for table in (whole, pooled, per_mode):
        assert (table["task"] == "t").all() and (table["change"] == 0).all()
    assert set(pooled["n"]) == {SMOKE.n_layers * 2 * 8} and set(per_mode["n"]) == {2 * 8 * M}


def test_mean_effective_and_median_step_lti_kernels_equal_their_parts():
    from analysis.interpret import mean_effective_kernels, median_step_lti_kernels
    torch.manual_seed(0)
    model = build("bimamba", SMOKE, VOCAB).eval()
    ids = torch.randint(5, VOCAB, (3, 10))
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    eff = mean_effective_kernels(model, ids, mask, chunk=2)
    assert eff.shape[:2] == (SMOKE.n_layers, 2) and eff.shape[-1] == 10
    alpha = hidden_attention(model, ids, mask, 1, "backward")
    assert torch.allclose(eff[1, 1], effective_kernels(alpha, mask).mean(0), atol=1e-6)
    lti = median_step_lti_kernels(model, ids, mask, channels=slice(None, None, 4))
    want = lti_kernels(model, 0, "forward", median_step_size(model, ids, mask, 0, "forward"), 10)[::4]
    assert torch.equal(lti[0, 0], want)


def test_centroid_table_pairs_kernels_and_sees_a_faster_decay_move_up():
    from analysis.interpret import centroid_table
    _, slow = _one_mode(0.95, 0.0, L=128)
    _, fast = _one_mode(0.5, 0.0, L=128)
    before = torch.stack([slow, fast]).reshape(1, 2, 1, 128)           # [layers, 2, K, L]
    after = torch.stack([fast, fast]).reshape(1, 2, 1, 128)
    table = centroid_table(before, {"types": after}, "codessm")
    assert list(table.columns) == ["model", "task", "layer", "direction", "kernel", "centroid_before", "centroid_after"]
    assert len(table) == 2 and (table.task == "types").all()
    moved, same = table.iloc[0], table.iloc[1]
    assert moved.centroid_after > moved.centroid_before               # faster decay = higher frequencies
    assert same.centroid_after == pytest.approx(same.centroid_before)
