"""The baselines' math: MDLM's loss is its ELBO, its sampler draws from the data with an exact
denoiser, and the AR model's KV cache changes nothing."""
import itertools
import math

import numpy as np
import torch

from tools import baselines
import flm
from conftest import joint_frequencies, toy_joint

K, L = 3, 2
MASK = K


def random_baseline(kind, std=0.1, seed=0, K=K, L=8):
    """A baseline with all weights random (the zero-initialised layers too), in float64."""
    torch.manual_seed(seed)
    cfg = flm.FLMConfig(vocab_size=K, block_size=L, n_layer=2, n_head=2, n_embd=16, n_cond=8)
    net = baselines.Baseline(cfg, kind).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, std)
    return net


def mdlm_exact_denoiser(p):
    """The exact MDLM denoiser of the toy p (K x K over L = 2): for each masked position, the
    data's conditional given the unmasked one (the marginal if both are masked), as logits."""
    log_p = p.log()

    def denoiser(x):
        out = torch.empty(x.size(0), 2, K, dtype=torch.float64)
        for n, (a, b) in enumerate(x.tolist()):
            out[n, 0] = log_p[:, b] if b != MASK else log_p.logsumexp(1)   # p(x_1 | x_2) or p(x_1)
            out[n, 1] = log_p[a, :] if a != MASK else log_p.logsumexp(0)   # p(x_2 | x_1) or p(x_2)
        return out
    return denoiser


def all_masks(B):
    return [torch.tensor(m, dtype=torch.bool).expand(B, L) for m in itertools.product([False, True], repeat=L)]


def expected_mdlm_loss(model, x, t_nodes, t_weights):
    """E_t E_mask of mdlm_loss for each sequence of x, with the masks enumerated exactly and t
    integrated by Gauss-Legendre quadrature (the integrand is a polynomial in t)."""
    total = torch.zeros(x.size(0), dtype=torch.float64)
    for t, w in zip(t_nodes, t_weights):
        for mask in all_masks(x.size(0)):
            m = int(mask[0].sum())
            prob = t ** m * (1 - t) ** (L - m)
            per_seq = torch.stack([baselines.mdlm_loss(model, x[i:i + 1], K, torch.full((1,), t, dtype=torch.float64),
                                                       mask[i:i + 1]) for i in range(x.size(0))])
            total += w * prob * per_seq
    return total


def gauss_legendre_01(n):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1) / 2, weights / 2


def test_mdlm_loss_is_the_continuous_time_elbo():
    """E_t E_mask[(1/t) sum_masked CE / L] written out directly: a mask of m positions has
    probability t^m (1 - t)^(L - m), so its weight is int_0^1 t^(m-1) (1 - t)^(L-m) dt = B(m, L-m+1)."""
    model = random_baseline('mdlm', std=0.3, L=L)
    x = torch.tensor(list(itertools.product(range(K), repeat=L)))
    direct = torch.zeros(len(x), dtype=torch.float64)
    for mask in all_masks(len(x)):
        m = int(mask[0].sum())
        if m == 0:
            continue
        beta = math.gamma(m) * math.gamma(L - m + 1) / math.gamma(L + 1)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.where(mask, MASK, x)), -1)
        nll = -logp.gather(-1, x[..., None])[..., 0]
        direct += beta * (nll * mask).sum(1) / L
    nodes, weights = gauss_legendre_01(8)
    with torch.no_grad():
        got = expected_mdlm_loss(model, x, nodes, weights)
    torch.testing.assert_close(got, direct, rtol=1e-10, atol=1e-12)


def test_mdlm_elbo_of_the_exact_denoiser_is_the_data_entropy():
    """With the exact conditionals the bound is tight: E_x[loss] = H(p) / L (masked diffusion is
    an any-order autoregressive model, and every order factorises p exactly)."""
    p = toy_joint()
    denoiser = mdlm_exact_denoiser(p)

    class Exact(torch.nn.Module):
        def forward(self, ids):
            return denoiser(ids)

    x = torch.tensor(list(itertools.product(range(K), repeat=L)))
    nodes, weights = gauss_legendre_01(8)
    per_x = expected_mdlm_loss(Exact(), x, nodes, weights)
    entropy = -(p * p.log()).sum()
    torch.testing.assert_close((p.flatten() * per_x).sum(), entropy / L, rtol=1e-10, atol=1e-12)


def test_mdlm_loss_draws_t_and_masks_as_the_elbo_says():
    """mdlm_loss with its own random t and masks, averaged, is the ELBO (Monte Carlo)."""
    p = toy_joint()
    denoiser = mdlm_exact_denoiser(p)

    class Exact(torch.nn.Module):
        def forward(self, ids):
            return denoiser(ids)

    torch.manual_seed(0)
    x = torch.multinomial(p.flatten().float(), 4000, replacement=True)
    x = torch.stack([x // K, x % K], dim=1)
    estimates = [baselines.mdlm_loss(Exact(), x, K).item() for _ in range(25)]
    entropy = -(p * p.log()).sum().item()
    # the estimate's spread, measured over the repeats, bounds the tolerance
    mean, sem = np.mean(estimates), np.std(estimates) / math.sqrt(len(estimates))
    assert abs(mean - entropy / L) < 4 * sem + 1e-3, (mean, entropy / L, sem)


def test_mdlm_sampler_with_the_exact_denoiser():
    """Each position is unmasked at a uniformly random one of the N steps, so two positions are
    drawn together (independently, from the marginals) with probability 1/N, else one after the
    other (from the joint): the samples follow (1/N) p_1 x p_2 + (1 - 1/N) p exactly."""
    p = toy_joint()
    denoiser = mdlm_exact_denoiser(p)
    product = p.sum(1)[:, None] * p.sum(0)[None, :]
    for steps, n in ((1, 20000), (4, 40000)):
        x = baselines.mdlm_sample(denoiser, (n, L), K, steps, generator=torch.Generator().manual_seed(steps))
        assert (x < K).all()  # nothing left masked
        want = product / steps + (1 - 1 / steps) * p
        freq = joint_frequencies(x, K)
        assert 0.5 * (freq - want).abs().sum() < 0.012, (steps, freq, want)
    # 4 steps are measurably not the joint, nor the product: the test tells these apart
    assert 0.5 * (product / 4 + 0.75 * p - p).abs().sum() > 0.05


def test_mdlm_sampler_keeps_known_positions():
    p = toy_joint()
    x_known = torch.full((500, L), 2)
    known = torch.tensor([True, False]).expand(500, L)
    x = baselines.mdlm_sample(mdlm_exact_denoiser(p), (500, L), K, 4, x_known, known,
                              generator=torch.Generator().manual_seed(0))
    assert (x[:, 0] == 2).all()
    # exact conditioning: the second token follows p(x_2 | x_1 = 2)
    freq = torch.bincount(x[:, 1], minlength=K).double() / 500
    want = p[2] / p[2].sum()
    assert 0.5 * (freq - want).abs().sum() < 0.08


def test_ar_kv_cache_generates_the_same_tokens():
    net = random_baseline('ar', std=0.3, K=11, L=24)
    for known in (None, torch.tensor([True] * 3 + [False] * 21).expand(4, 24)):
        x_known = torch.randint(0, 11, (4, 24), generator=torch.Generator().manual_seed(1))
        kw = dict(x_known=x_known, known=known)
        with_cache = baselines.ar_sample(net, (4, 24), **kw, generator=torch.Generator().manual_seed(5))
        without = baselines.ar_sample(net, (4, 24), **kw, generator=torch.Generator().manual_seed(5), cache=False)
        assert torch.equal(with_cache, without)
        assert len(set(with_cache.flatten().tolist())) > 3  # not a constant sequence
        if known is not None:
            assert torch.equal(with_cache[:, :3], x_known[:, :3])
    assert all(block.attn.k_cache is None for block in net.blocks)  # the cache is freed


def test_ar_cached_logits_equal_the_full_pass_and_are_causal():
    net = random_baseline('ar', std=0.3, K=11, L=24)
    x = torch.randint(0, 11, (3, 24), generator=torch.Generator().manual_seed(2))
    inputs = baselines.ar_inputs(x, 11)
    full = net(inputs)
    net.start_cache(3, 'cpu')
    stepwise = torch.cat([net(inputs[:, :5])] + [net(inputs[:, i:i + 1]) for i in range(5, 24)], dim=1)
    net.stop_cache()
    torch.testing.assert_close(stepwise, full, rtol=1e-10, atol=1e-10)
    # causal: changing a later token leaves earlier logits alone
    changed = inputs.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 11
    torch.testing.assert_close(net(changed)[:, :10], full[:, :10], rtol=0, atol=0)
    assert not torch.allclose(net(changed)[:, 10:], full[:, 10:])


def test_ar_nll_is_the_chain_rule():
    """ar_nll (one pass over the shifted input) against -log p(x_i | x_<i) of separate passes."""
    net = random_baseline('ar', std=0.3, K=11, L=12)
    x = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(3))
    by_hand = torch.zeros(2, 12, dtype=torch.float64)
    for i in range(12):
        prefix = torch.cat([torch.full((2, 1), 11), x[:, :i]], dim=1)
        logp = torch.log_softmax(net(prefix)[:, -1], -1)
        by_hand[:, i] = -logp.gather(1, x[:, i:i + 1])[:, 0]
    torch.testing.assert_close(baselines.ar_nll(net, x, 11).double(), by_hand, rtol=1e-6, atol=1e-6)
