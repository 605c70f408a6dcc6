"""The time reparameterization g = G(t), G = A^-1 (method.md 2): A is monotone from 0 to 1, matches
a closed form (K = 2) and Monte Carlo, G inverts it within 1e-3 for K = 2, 65 and 50257, rises
later for a larger vocabulary, and is read off its table by linear interpolation."""
import pytest
import torch

import flm


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
