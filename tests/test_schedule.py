"""The time reparameterization g = G(t), G = A^-1 (method.md 2): A is monotone from 0 to 1, matches
a closed form (K = 2) and Monte Carlo, G inverts it within 1e-3 for K = 2, 65 and 50257, rises
later for a larger vocabulary, and is read off its table by linear interpolation. G(1) = 1 exactly and G
never falls, for any K; so a boundary jump (0 -> 1) lands on the data."""
import pytest
import torch

import flm
import stages


@pytest.mark.parametrize("K", [2, 65, 50257])
def test_A_is_a_monotone_map_from_0_to_1(K):
    g = torch.linspace(0, 1, 2001, dtype=torch.float64)
    A = flm.decodability(g, K)
    assert abs(A[0].item()) < 1e-6 and abs(A[-1].item() - 1) < 1e-12
    assert (A.diff() >= -1e-12).all()
    assert 0 < A[1000] < 1 and A[1800] > 0.3  # it does rise in between


def test_A_matches_a_closed_form_and_monte_carlo():
    # K = 2: P(g) = Prob(eps_x + snr > eps_j) = Phi(snr / sqrt(2)) exactly
    g = torch.tensor([0.1, 0.3, 0.5, 0.7], dtype=torch.float64)
    snr = g / (1 - g)
    exact = 2 * (torch.special.ndtr(snr / 2 ** 0.5) - 0.5)
    assert torch.allclose(flm.decodability(g, 2), exact, atol=1e-10)
    # K = 65: the probability that the argmax of x_g is the clean token, by sampling
    torch.manual_seed(0)
    K, g0 = 65, 0.7
    eps = torch.randn(100_000, K, dtype=torch.float64)
    x_g = (1 - g0) * eps
    x_g[:, 0] += g0
    P = (x_g.argmax(1) == 0).double().mean().item()
    A_mc = K / (K - 1) * (P - 1 / K)
    assert abs(flm.decodability(torch.tensor([g0], dtype=torch.float64), K).item() - A_mc) < 6e-3


@pytest.mark.parametrize("K", [2, 65, 50257])
def test_G_inverts_A(K):
    table = flm.g_table(K)
    t = torch.linspace(0, 1, 4001)
    g = flm.G(t, table)
    assert g[0].item() == 0.0
    assert (g.diff() >= 0).all()  # monotone
    A = flm.decodability(g.double().clamp(max=1 - 1e-12), K)
    assert (A - t.double()).abs().max().item() < 1e-3


def test_G_rises_later_for_a_larger_vocabulary():
    t = torch.linspace(0.05, 0.95, 19)
    g_small = flm.G(t, flm.g_table(65))
    g_large = flm.G(t, flm.g_table(50257))
    assert (g_large > g_small + 0.02).all()
    # and for a large vocabulary most of the change happens in a narrow band of g
    assert (g_large[-1] - g_large[0]) < (g_small[-1] - g_small[0])


def test_G_interpolates_the_table_linearly():
    table = flm.g_table(65)
    t = torch.rand(1000)
    # linear interpolation in the table at t * n
    n = table.numel() - 1
    i = (t * n).floor().long()
    expected = table[i] + (t * n - i) * (table[i + 1] - table[i])
    assert torch.allclose(flm.G(t, table), expected, atol=1e-6)


def test_G_ends_at_1_and_never_falls_for_every_vocabulary():
    # A rounds to 1 in float64 before g reaches 1; for K = 1000 and 30522 that happens on the grid,
    # and a table that kept that g ended at G(1) ~ 0.93. The closing point (A, g) = (1, 1) fixes G(1) = 1.
    for K in (2, 65, 1000, 30522, 50257, 50258):
        table = flm.g_table(K)
        assert table[0].item() == 0.0 and table[-1].item() == 1.0, K
        assert (table.diff() >= 0).all(), K
        assert flm.G(torch.ones(1), table).item() == 1.0
    # 100 random K up to 200,000, on cheaper tables of the same construction (a coarser grid)
    rng = torch.Generator().manual_seed(0)
    for K in torch.randint(2, 200_001, (100,), generator=rng).tolist():
        table = flm._g_table_cpu(K, n_table=64, n_grid=1024)
        assert table[-1].item() == 1.0 and (table.diff() >= 0).all(), K


def test_a_boundary_jump_at_K_1000_lands_on_the_data():
    # The jump s = 0 -> t = 1 of a flow map (stage 1's X with r = 0, the one-network student's Y) from
    # noise x ends at the denoiser's answer D itself, with no share of x left; and the one-network
    # target's gamma (the weight of the half jump s -> u) is 0 there: (1 - G(1)) = 0.
    K, table = 1000, flm.g_table(1000)
    torch.manual_seed(0)
    x = torch.randn(2, 3, K)
    D = torch.softmax(torch.randn(2, 3, K), -1)
    g_s, g_u, g_t = (flm.G(torch.full((2,), v), table)[:, None, None] for v in (0.0, 0.5, 1.0))
    X = stages.stage1_flow_map(D, torch.zeros_like(D), x, g_s, g_t)
    assert torch.allclose(X, D, atol=1e-6)
    Y = flm.jump(x, D, g_s, g_t)
    assert torch.allclose(Y, D, atol=1e-6)
    gamma, gamma_bar = flm.semigroup_weights(g_s, g_u, g_t)
    assert (gamma == 0).all() and (gamma_bar == 1).all()
