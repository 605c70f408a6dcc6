"""The one-hot flow, the network and the CE loss (method.md 1, 3): the interpolant's moments, the
velocity's direction, a zero-initialised network's uniform output, a two-time network that starts as
its one-time copy, a network that sees every position and their order (rotary positions), a loss
that noises at G(t) and conditions on t with stratified times, the learnable loss weighting's
optimum w = log(loss) and the times it reads, and the per-token Bayes denoiser against Bayes' rule computed by hand."""
import math

import torch
import torch.nn.functional as F

import flm


def test_interpolant_moments():
    torch.manual_seed(0)
    B, L, K = 4, 2000, 5
    x = torch.randint(K, (B, L))
    g = torch.tensor([0.0, 0.25, 0.6, 0.9])
    x_g = flm.interpolant(x, g, torch.randn(B, L, K))
    residual = x_g - g[:, None, None] * F.one_hot(x, K)  # = (1 - g) * eps
    assert residual.mean().abs() < 0.02
    assert torch.allclose(residual.std(dim=(1, 2)), 1 - g, rtol=0.03)
    # g = 1 is the clean one-hot
    assert torch.equal(flm.interpolant(x, torch.ones(B), torch.randn(B, L, K)), F.one_hot(x, K).float())


def test_velocity_points_from_x_g_to_the_denoiser():
    # x_g + (1 - g) * v(x_g) = D: one Euler step of size 1 - g lands on D
    torch.manual_seed(0)
    z, D, g = torch.randn(3, 4, 7), torch.softmax(torch.randn(3, 4, 7), -1), torch.tensor(0.3)
    assert torch.allclose(z + (1 - g) * flm.velocity(D, z, g), D, atol=1e-6)


def tiny_config(**kw):
    return flm.FLMConfig(**{**dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, n_cond=16), **kw})


def test_zero_initialised_model_gives_uniform_output():
    torch.manual_seed(0)
    for cfg in [tiny_config(), tiny_config(two_times=True)]:
        model = flm.FLM(cfg)
        x_g, t = 3 * torch.randn(5, 16, 11), torch.rand(5)
        logits = model(x_g, t, t2=torch.rand(5) if cfg.two_times else None)
        assert torch.equal(logits, torch.zeros_like(logits))
        # and the loss at init is log K, whatever the data
        loss = flm.flm_loss(model, torch.randint(11, (5, 16)), flm.g_table(11), 11)
        assert abs(loss.item() - math.log(11)) < 1e-5


def test_second_time_starts_as_a_copy_of_the_one_time_model():
    torch.manual_seed(0)
    teacher = flm.FLM(tiny_config())
    for p in teacher.parameters():  # non-trivial weights everywhere
        p.data.normal_(0, 0.1)
    student = flm.FLM(tiny_config(two_times=True))
    student.load_state_dict(teacher.state_dict(), strict=False)
    x_g, t = torch.randn(3, 16, 11), torch.rand(3)
    assert torch.allclose(student(x_g, t, torch.rand(3)), teacher(x_g, t), atol=1e-6)
    assert not torch.allclose(teacher(x_g, t), teacher(x_g, 1 - t))  # time does matter


def test_the_network_sees_all_positions_and_their_order():
    torch.manual_seed(0)
    model = flm.FLM(tiny_config())
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    x_g, t = torch.randn(1, 16, 11), torch.rand(1)
    out = model(x_g, t)
    x2 = x_g.clone()
    x2[0, -1] += 1.0  # the last position changes the first one's output: bidirectional
    assert not torch.allclose(model(x2, t)[0, 0], out[0, 0])
    # swapping two positions' inputs does not just swap their outputs: positions are used
    x3 = x_g.clone()
    x3[0, [0, 5]] = x_g[0, [5, 0]]
    assert not torch.allclose(model(x3, t)[0, 0], out[0, 5], atol=1e-4)


def test_loss_noises_at_G_of_t_and_conditions_on_t():
    # a probe network records what flm_loss feeds it: the noise level of x_g must be
    # G(t) for the t the network is given (not g = t, nor conditioning on g)
    K, B, L = 64, 64, 256
    table = flm.g_table(K)
    seen = {}

    def probe(x_g, t):
        seen['x_g'], seen['t'] = x_g, t
        return torch.zeros(*x_g.shape, requires_grad=True)

    torch.manual_seed(0)
    x = torch.randint(K, (B, L))
    flm.flm_loss(probe, x, table, K)
    x_g, t = seen['x_g'], seen['t']
    g = flm.G(t, table)
    clean = F.one_hot(x, K).bool()
    # the other K - 1 coordinates are pure noise (1 - g) eps: 16k values a sequence pin 1 - g down
    noise_std = x_g[~clean].view(B, -1).pow(2).mean(1).sqrt()
    assert torch.allclose(noise_std, 1 - g, atol=0.01)
    # and the clean coordinate is g + (1 - g) eps: its mean over L tokens is g (std error <= 1/16)
    assert torch.allclose(x_g[clean].view(B, L).mean(1), g, atol=0.25)
    # antithetic t: one per stratum [i/B, (i+1)/B)
    assert torch.equal((t.sort().values * B).floor(), torch.arange(B).float())


def test_learnable_loss_weighting():
    """exp(-w) * loss + w is minimised at w = log(loss): train w alone against a fixed loss that
    depends on t. w reads the times through its own embedding, not the network's conditioning."""
    torch.manual_seed(0)
    model = flm.FLM(tiny_config(learn_loss_weight=True))
    x_g, t = torch.randn(16, 16, 11), torch.rand(16)
    loss = 1 + 3 * t
    _, w = model(x_g, t, with_weight=True)
    assert torch.equal(flm.learned_weighting(loss, w), loss.mean())  # w = 0 at init
    opt = torch.optim.Adam(model.loss_weight.parameters(), lr=0.01)
    for _ in range(300):
        _, w = model(x_g, t, with_weight=True)
        weighted = flm.learned_weighting(loss, w)
        opt.zero_grad()
        weighted.backward()
        opt.step()
    assert torch.allclose(w, loss.log(), atol=0.05)
    # the network's own time conditioning and its input do not move w
    w = model(x_g, t, with_weight=True)[1]
    with torch.no_grad():
        model.time_embed.mlp[-1].weight.normal_()
    assert torch.equal(model(3 * x_g, t, with_weight=True)[1], w)


def test_loss_weight_reads_s_or_s_and_t():
    # stage 1's w(s) ignores the second time; a w(s, t) reads both
    torch.manual_seed(0)
    x_g, s = torch.randn(4, 16, 11), torch.rand(4)
    for times in (1, 2):
        model = flm.FLM(tiny_config(two_times=True, learn_loss_weight=times))
        for p in model.loss_weight.parameters():  # non-trivial weights, the zeroed last layer included
            p.data.normal_(0, 0.1)
        w1, w2 = (model(x_g, s, t2, with_weight=True)[1] for t2 in (torch.rand(4), torch.rand(4)))
        assert torch.equal(w1, w2) == (times == 1)
        assert not torch.allclose(w1, model(x_g, 1 - s, torch.rand(4), with_weight=True)[1])


def test_unigram_denoiser_is_bayes_for_iid_tokens():
    # tokens i.i.d. from pi: the posterior p(x | x_g) by Bayes' rule on a grid of tokens
    torch.manual_seed(0)
    K = 6
    pi = torch.softmax(torch.randn(K), 0)
    g = torch.tensor([0.4])
    x_g = torch.randn(1, 1, K)
    # log N(x_g; g e_k, (1-g)^2 I) for each k, plus log pi_k
    e = torch.eye(K)
    log_lik = -((x_g[0, 0] - g * e) ** 2).sum(-1) / (2 * (1 - g) ** 2)
    posterior = torch.softmax(pi.log() + log_lik, 0)
    ours = torch.softmax(flm.unigram_denoiser_logits(x_g, g, pi.log())[0, 0], 0)
    assert torch.allclose(ours, posterior, atol=1e-6)


def test_unigram_denoiser_of_a_projected_state_is_bayes():
    # what a network with input layer E (K > d) sees: h = x_g @ E ~ N(g E_x, (1-g)^2 E^T E) given x
    torch.manual_seed(0)
    K, d = 12, 4
    pi = torch.softmax(torch.randn(K, dtype=torch.float64), 0)
    E = torch.randn(K, d, dtype=torch.float64)
    g = torch.tensor([0.7], dtype=torch.float64)
    h = torch.randn(1, 1, d, dtype=torch.float64)
    law = torch.distributions.MultivariateNormal(g * E, covariance_matrix=(1 - g) ** 2 * E.T @ E)
    posterior = torch.softmax(pi.log() + law.log_prob(h[0, 0]), 0)
    ours = torch.softmax(flm.unigram_denoiser_logits(h, g, pi.log(), E)[0, 0], 0)
    torch.testing.assert_close(ours, posterior, rtol=1e-9, atol=1e-12)
    # E square and invertible: d dims lose nothing, the denoiser of R^K
    E = torch.randn(K, K, dtype=torch.float64)
    x_g = torch.randn(1, 1, K, dtype=torch.float64)
    torch.testing.assert_close(torch.softmax(flm.unigram_denoiser_logits(x_g @ E, g, pi.log(), E), -1),
                               torch.softmax(flm.unigram_denoiser_logits(x_g, g, pi.log()), -1), rtol=1e-8, atol=1e-10)
