"""The Euler sampler driven by the exact denoiser of a toy distribution (method.md 4): many steps
reproduce the joint distribution, one step returns the mode of the marginals, steps are uniform in
t and move by G; prompting by replacement keeps the prompt and moves the rest most of the way to
the true conditional; fresh noise keeps the noise level, and with eta 0.6 still reproduces the
joint (eta 1 does not)."""
import torch

import flm
from conftest import exact_denoiser, joint_frequencies, toy_joint

K = 3
N_SAMPLES = 20_000


def sample_toy(steps, seed=0, **kw):
    p, table = toy_joint(), flm.g_table(K)
    gen = torch.Generator().manual_seed(seed)
    return flm.euler_sample(exact_denoiser(p, table), table, (N_SAMPLES, 2, K), steps, generator=gen, **kw)


def tv(p, q):
    return 0.5 * (p - q).abs().sum().item()


def test_euler_with_the_exact_denoiser_reproduces_the_joint_distribution():
    p = toy_joint()
    errors = {steps: tv(joint_frequencies(sample_toy(steps), K), p) for steps in (2, 8, 64)}
    # sampling error alone: TV of 20k draws over 9 cells is ~0.01
    assert errors[64] < 0.02, errors
    assert errors[2] > errors[8] > errors[64], errors
    # the correlation is reproduced, not just the marginals
    q = joint_frequencies(sample_toy(64, seed=1), K)
    assert abs(q.diagonal().sum().item() - p.diagonal().sum().item()) < 0.02


def test_one_step_returns_the_mode_of_the_marginals():
    p = toy_joint()
    x = sample_toy(1)
    modes = torch.stack([p.sum(1).argmax(), p.sum(0).argmax()])
    assert (x == modes).all()


def test_prompting_by_replacement_keeps_the_prompt_and_steers_towards_the_conditional():
    # fix x_1 = 1 on every sample. Replacement (method.md 4) is a heuristic, not exact
    # conditioning: early on the replaced z_1 carries little information about x_1, and the
    # deterministic ODE keeps the decisions made then. So x_2 lands between its marginal
    # and p(x_2 | x_1 = 1): measured TV to the conditional 0.24, against 0.40 for the marginal.
    p = toy_joint()
    x_known = torch.ones(N_SAMPLES, 2, dtype=torch.long)
    known = torch.zeros(N_SAMPLES, 2, dtype=torch.bool)
    known[:, 0] = True
    x = sample_toy(64, x_known=x_known, known=known)
    assert (x[:, 0] == 1).all()
    freq = torch.bincount(x[:, 1], minlength=K).double() / N_SAMPLES
    conditional, marginal = p[1] / p[1].sum(), p.sum(0)
    assert tv(freq, conditional) < tv(marginal, conditional) - 0.1, (freq, conditional)
    assert freq.argmax() == conditional.argmax() != marginal.argmax()
    # without the prompt the same noise gives the marginal
    assert tv(torch.bincount(sample_toy(64)[:, 1], minlength=K).double() / N_SAMPLES, marginal) < 0.02


def test_sampler_conditions_on_uniform_t_and_moves_by_G():
    # a probe denoiser: the sampler must hand it t = i / N, and the state it hands on
    # must sit at noise level G(t): with a denoiser that always answers token 0,
    # z_i = (1 - G(t_i)) * z_0 + G(t_i) * e_0 exactly
    table, steps = flm.g_table(K), 5
    seen = []

    def probe(z, t):
        seen.append((z.clone(), t.clone()))
        return torch.tensor([30.0, 0.0, 0.0]).expand_as(z)

    gen = torch.Generator().manual_seed(0)
    flm.euler_sample(probe, table, (4, 2, K), steps, generator=gen)
    z0 = seen[0][0]
    e0 = torch.tensor([1.0, 0.0, 0.0])
    for i, (z, t) in enumerate(seen):
        assert torch.allclose(t, torch.full((4,), i / steps))
        g = flm.G(t[:1], table)
        assert torch.allclose(z, (1 - g) * z0 + g * e0, atol=1e-5)


def test_refresh_noise_keeps_the_level_and_redraws_a_share_of_the_noise():
    # z = g D + (1 - g) eps_hat  ->  g D + (1 - g) eps', eps' ~ N(0, I), corr(eps', eps_hat) = sqrt(1 - eta^2)
    gen = torch.Generator().manual_seed(0)
    n, g, eta = 200_000, torch.tensor(0.6), 0.6
    D = torch.softmax(torch.randn(n, 1, K, generator=gen), -1)
    eps_hat = torch.randn(n, 1, K, generator=gen)
    z = g * D + (1 - g) * eps_hat
    eps_new = (flm.refresh_noise(z, D, g, eta, gen) - g * D) / (1 - g)
    assert eps_new.mean().abs() < 0.01
    assert (eps_new.std() - 1).abs() < 0.01
    assert ((eps_new * eps_hat).mean() - (1 - eta ** 2) ** 0.5).abs() < 0.01
    assert torch.allclose(flm.refresh_noise(z, D, g, 0.0, gen), z, atol=1e-6)


def test_fresh_noise_with_the_exact_denoiser_still_reproduces_the_joint_distribution():
    # with the exact denoiser eta = 0.6 must not bias the samples (measured TV 0.011 at
    # 64 steps, sampling error alone ~0.01); eta = 1 (all noise redrawn) does: TV 0.09
    p = toy_joint()
    assert tv(joint_frequencies(sample_toy(64, eta=0.6), K), p) < 0.03
    assert tv(joint_frequencies(sample_toy(64, eta=1.0), K), p) > 0.05
