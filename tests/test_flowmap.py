"""Flow-map distillation (method.md 5): the (s, u, t) draws and their boundary share; a zero
residual is the teacher's Euler step and a stage-2 student starts as its teacher; the semigroup
target and stage 2's gap have no x term (method.md 7c); stage 1's loss is the semigroup defect of
the sampler's own flow map; both losses vanish at an exact flow map; and distilling the exact
denoiser of a toy distribution gives a one-step sampler close to the data (total variation)."""
import torch

import flm
from conftest import exact_denoiser, joint_frequencies, toy_joint
from test_flm import tiny_config


def random_teacher():
    torch.manual_seed(0)
    teacher = flm.FLM(tiny_config())
    for p in teacher.parameters():  # non-trivial weights everywhere, the output layer included
        p.data.normal_(0, 0.1)
    return teacher.eval()


def levels(B, table):
    s, u, t = flm.flow_map_times(B, "cpu", boundary_every=4)
    return s, u, t, *(flm.G(v, table).double()[:, None, None] for v in (s, u, t))


def test_flow_map_times():
    torch.manual_seed(0)
    s, u, t = flm.flow_map_times(200_000, "cpu", boundary_every=8)
    assert (s >= 0).all() and (t <= 1).all() and (t > s).all()
    assert torch.allclose(u, (s + t) / 2)
    boundary = (s == 0) & (t == 1)
    assert abs(boundary.float().mean() - 1 / 8) < 0.005
    d, s = (t - s)[~boundary], s[~boundary]
    # d ~ U(0, 1) and s ~ U(0, 1 - d): E[d] = 1/2, E[s] = E[(1 - d) / 2] = 1/4, and s / (1 - d) ~ U(0, 1)
    assert abs(d.mean() - 0.5) < 0.005 and abs(s.mean() - 0.25) < 0.005
    assert abs((s / (1 - d)).mean() - 0.5) < 0.005 and abs((d < 0.1).float().mean() - 0.1) < 0.005


def test_zero_residual_flow_map_is_the_teachers_euler_step():
    teacher, table = random_teacher(), flm.g_table(11)
    r_phi = flm.flow_map_student(teacher, stage=1)
    z = 2 * torch.randn(3, 16, 11)
    s, _, t, g_s, _, g_t = levels(3, table)
    g_s, g_t = g_s.float(), g_t.float()
    r = r_phi(z, s, t)
    assert torch.equal(r, torch.zeros_like(r))  # zeroed output layer: r_phi = 0 at init
    D = torch.softmax(teacher(z, s), -1)
    euler = z + (g_t - g_s) * (D - z) / (1 - g_s)
    assert torch.allclose(flm.stage1_flow_map(D, r, z, g_s, g_t), euler, atol=1e-6)
    # so the stage-1 sampler with r_phi = 0 runs the teacher's Euler steps and answers argmax(z)
    steps, gen = 4, torch.Generator().manual_seed(5)
    x = flm.stage1_sample(teacher, r_phi, table, (2, 16, 11), steps, generator=gen)
    z = torch.randn(2, 16, 11, generator=torch.Generator().manual_seed(5))
    for i in range(steps):
        t_i, t_next = torch.full((2,), i / steps), torch.full((2,), (i + 1) / steps)
        g, g_next = flm.G(t_i, table)[:, None, None], flm.G(t_next, table)[:, None, None]
        z = z + (g_next - g) * (torch.softmax(teacher(z, t_i), -1) - z) / (1 - g)
    assert torch.equal(x, z.argmax(-1))


def test_stage2_student_starts_as_the_teacher_and_samples_like_it():
    teacher, table = random_teacher(), flm.g_table(11)
    h_psi = flm.flow_map_student(teacher, stage=2)
    z, s, t = torch.randn(3, 16, 11), torch.rand(3), torch.rand(3)
    assert torch.allclose(h_psi(z, s, t), teacher(z, s), atol=1e-6)
    kw = dict(table=table, shape=(2, 16, 11), steps=4)
    x_fm = flm.euler_sample(h_psi, generator=torch.Generator().manual_seed(3), flow_map=True, **kw)
    x_flm = flm.euler_sample(teacher, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(x_fm, x_flm)


def test_semigroup_target_has_no_x_term_and_is_the_two_jump_endpoint():
    # method.md 7c: with the network outputs held fixed, x_s does not move the target
    torch.manual_seed(0)
    B, L, K = 64, 3, 5
    _, _, _, g_s, g_u, g_t = levels(B, flm.g_table(K))
    outs = [torch.randn(B, L, K, dtype=torch.float64) for _ in range(4)]  # D_s, r_su, D_u, r_ut
    x_s = torch.randn(B, L, K, dtype=torch.float64)
    target = flm.semigroup_target(x_s, g_s, g_u, g_t, *outs)
    assert torch.allclose(flm.semigroup_target(x_s + 3 * torch.randn_like(x_s), g_s, g_u, g_t, *outs), target,
                          atol=1e-9)
    # and it is the endpoint of the two half jumps X_{u,t}(X_{s,u}(x_s)), in pred's denoiser units
    D_s, r_su, D_u, r_ut = outs
    x_u = flm.stage1_flow_map(D_s, r_su, x_s, g_s, g_u)
    x_t = flm.stage1_flow_map(D_u, r_ut, x_u, g_u, g_t)
    assert torch.allclose(target, x_s + (1 - g_s) / (g_t - g_s) * (x_t - x_s), atol=1e-7)


def test_stage2_gap_has_no_x_term():
    # X_{s,t}(x) - Y_{s,t}(x), computed from the two maps, equals flow_map_gap, which has no x
    torch.manual_seed(0)
    B, L, K = 64, 3, 5
    _, _, _, g_s, _, g_t = levels(B, flm.g_table(K))
    D_T, D_psi = (torch.softmax(torch.randn(B, L, K, dtype=torch.float64), -1) for _ in range(2))
    r = torch.randn(B, L, K, dtype=torch.float64)
    gap = flm.flow_map_gap(D_T, r, D_psi, g_s, g_t)
    for scale in (0.5, 4.0):
        x = scale * torch.randn(B, L, K, dtype=torch.float64)
        X = flm.stage1_flow_map(D_T, r, x, g_s, g_t)
        Y = x + (g_t - g_s) * (D_psi - x) / (1 - g_s)
        assert torch.allclose(X - Y, gap, atol=1e-9)


def test_stage1_loss_is_the_semigroup_defect_of_the_samplers_flow_map():
    # the loss, written in denoiser units, must be ((1 - g_s) / Delta)^2 times the squared gap
    # between one jump s -> t and two jumps s -> u -> t of stage1_flow_map, the map the sampler uses
    torch.manual_seed(0)
    K, B, L = 5, 256, 3
    table = flm.g_table(K)
    W = 0.5 * torch.randn(K, K, dtype=torch.float64)
    seen = []

    def teacher(x, t):
        return x.double() @ W

    def student(x, s, t, with_weight=False):
        seen.append((x, s, t))
        return torch.tanh(x.double() @ W.T) * (1 + s + 2 * t)[:, None, None]  # depends on x, s and t

    loss = flm.stage1_loss(student, teacher, torch.randint(K, (B, L)), table, K, boundary_every=8, weighted=False)
    (x_s, s, u), (_, _, t) = seen[0], seen[-1]

    def g(v):
        return flm.G(v, table).double()[:, None, None]

    def X(x, a, b):
        return flm.stage1_flow_map(torch.softmax(teacher(x, a), -1), student(x, a, b), x, g(a), g(b))

    x_s = x_s.double()
    gap = X(X(x_s, s, u), u, t) - X(x_s, s, t)
    expected = K * ((1 - g(s)) / (g(t) - g(s)) * gap).pow(2).mean()
    assert torch.allclose(loss.double(), expected, rtol=1e-4), (loss.item(), expected.item())


def constant_denoiser(D):
    """A teacher whose denoiser is the same distribution D everywhere: its ODE
    dx/dg = (D - x)/(1 - g) has the exact solution x_t = D + (x_s - D)(1 - g_t)/(1 - g_s),
    which is exactly one Euler step: r = 0 is its exact flow map."""
    return lambda x, t: D.log().expand(x.shape)


def zero_network(x, s, t, with_weight=False):
    out = torch.zeros_like(x, requires_grad=True)
    return (out, torch.zeros(x.size(0))) if with_weight else out


def test_losses_vanish_at_an_exact_flow_map():
    torch.manual_seed(0)
    K, table = 7, flm.g_table(7)
    x = torch.randint(K, (16, 4))
    D = torch.softmax(torch.randn(4, K), -1)
    assert flm.stage1_loss(zero_network, constant_denoiser(D), x, table, K, boundary_every=2).item() < 1e-10
    # stage 2 matches stage 1's map when softmax(h) = D and r = 0
    student = lambda x, s, t, with_weight=False: (constant_denoiser(D)(x, s), torch.zeros(x.size(0)))
    assert flm.stage2_loss(student, constant_denoiser(D), zero_network, x, table, K).item() < 1e-10
    # a teacher whose denoiser depends on x is not solved by one Euler step: the loss sees it
    teacher = random_teacher()
    x = torch.randint(11, (16, 16))
    assert flm.stage1_loss(zero_network, teacher, x, flm.g_table(11), 11, boundary_every=2).item() > 1e-4


def test_distilling_an_exact_teacher_gives_a_one_step_sampler():
    # the teacher is the exact denoiser of the toy distribution: its one Euler step writes the
    # mode of the marginals everywhere, its 64 steps reproduce the data. A short stage 1 +
    # stage 2 distillation must give a one-step sampler close to the data.
    torch.manual_seed(0)
    p, K, L = toy_joint(), 3, 2
    table = flm.g_table(K)
    teacher = exact_denoiser(p, table)

    def batch(B=256):
        i = torch.multinomial(p.flatten().float(), B, replacement=True)
        return torch.stack([i // K, i % K], 1)

    def train(net, loss_fn, iters=300):
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(iters):
            loss = loss_fn(net, batch())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net.eval()

    cfg = flm.FLMConfig(vocab_size=K, block_size=L, n_layer=2, n_head=2, n_embd=64, n_cond=64, two_times=True,
                        learn_loss_weight=True)
    r_phi = flm.FLM(cfg)  # zero output layer: starts as the teacher's Euler step
    train(r_phi, lambda net, x: flm.stage1_loss(net, teacher, x, table, K, boundary_every=8))
    h_psi = train(flm.FLM(cfg), lambda net, x: flm.stage2_loss(net, teacher, r_phi, x, table, K, boundary_every=8))

    def tv(x):
        return 0.5 * (joint_frequencies(x, K) - p).abs().sum().item()

    def gen():
        return torch.Generator().manual_seed(1)

    N = 20_000
    teacher_1 = tv(flm.euler_sample(teacher, table, (N, L, K), 1, generator=gen()))
    teacher_64 = tv(flm.euler_sample(teacher, table, (N, L, K), 64, generator=gen()))
    stage1_1, stage1_4 = (tv(flm.stage1_sample(teacher, r_phi, table, (N, L, K), n, generator=gen())) for n in (1, 4))
    stage2_1 = tv(flm.euler_sample(h_psi, table, (N, L, K), 1, generator=gen(), flow_map=True))
    print(f"TV to the data: teacher 1 step {teacher_1:.3f}, 64 steps {teacher_64:.3f}; "
          f"stage 1 at 1 and 4 steps {stage1_1:.3f}, {stage1_4:.3f}; stage 2 at 1 step {stage2_1:.3f}")
    assert teacher_1 > 0.6 and teacher_64 < 0.03
    assert stage1_1 < 0.2 and stage2_1 < 0.2 and stage1_4 < 0.06
