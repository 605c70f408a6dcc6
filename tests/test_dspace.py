"""The state in d dimensions (method.md 7): the projected noise has the law of eps @ M (one network's E,
or several side by side, also when two of them share an E); the projected path is chosen where it is
cheaper and draws no K-dimensional noise; averaged over many draws its losses and their gradients are
the dense path's; and fed the same K-dimensional noise, the projected samplers (Euler, with fresh noise
and a prompt, the flow map's, stage 1's) write the same tokens as the dense ones. Tiny float64 networks."""
import torch

import flm
import stages

K, D_MODEL, L = 300, 16, 4


def random_flm(seed, K=K, d=D_MODEL, two_times=False, learn_loss_weight=0):
    """An FLM with every weight random (the zero-initialised layers too), in float64; its input layer
    E is anisotropic (columns of different scales, mixed), so that its Gram is far from a multiple of I."""
    torch.manual_seed(seed)
    cfg = flm.FLMConfig(vocab_size=K, block_size=L, n_layer=1, n_head=2, n_embd=d, n_cond=8, two_times=two_times,
                        learn_loss_weight=learn_loss_weight)
    net = flm.FLM(cfg).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
        mix = torch.randn(d, d, dtype=torch.float64) * torch.logspace(-1, 0.5, d, dtype=torch.float64)
        net.embed.weight.copy_((0.1 * torch.randn(K, d, dtype=torch.float64) @ mix).T)
    return net.eval()


def assert_law_of_eps_at(M, space, n=100_000):
    """The space's noise (n tokens) against N(0, M^T M), the law of eps @ M: mean and covariance
    within Monte Carlo error (z-scores below 5)."""
    gram = M.T @ M
    h = space.noise(n, 1, generator=torch.Generator().manual_seed(0)).flatten(0, 1)
    var = gram.diagonal()
    assert (h.mean(0) / (var / n).sqrt()).abs().max() < 5
    cov = h.T @ h / n
    se = ((var[:, None] * var[None, :] + gram ** 2) / n).sqrt()
    assert ((cov - gram) / se).abs().max() < 5, ((cov - gram) / se).abs().max()


def test_projected_noise_has_the_law_of_eps_at_E():
    for vocab, d in ((65, 16), (2000, 8)):  # K a few times d, and K >> d
        net = random_flm(0, K=vocab, d=d)
        space = flm.StateSpace(vocab, [net])
        assert space.projected and space.R.shape == (d, d)
        assert_law_of_eps_at(net.embed.weight.T, space)


def test_joint_noise_of_several_networks_has_the_law_of_eps_at_their_Es():
    # a teacher and a student with their own E read one state: its images under both, drawn jointly.
    # A student made from its teacher shares its E: M = [E, E] has rank d, and the jitter keeps it drawable
    teacher, other = random_flm(0), random_flm(1, two_times=True)
    copy = flm.flow_map_student(teacher, stage=2).double()
    for nets in ((other, teacher), (copy, teacher), (copy, teacher, other)):
        space = flm.StateSpace(K, list(nets))
        M = torch.cat([net.embed.weight.T for net in nets], 1)
        assert space.projected and torch.isfinite(space.R).all()
        assert_law_of_eps_at(M, space)
    # each network is handed its own columns: a shared E gives equal images
    h = flm.StateSpace(K, [copy, teacher]).noise(8, L)
    assert torch.allclose(h[..., :D_MODEL], h[..., D_MODEL:], atol=1e-6)


def test_the_projected_path_where_cheaper_and_no_K_dimensional_noise(monkeypatch):
    assert not flm.StateSpace(65, [flm.FLM(flm.FLMConfig(n_layer=1))]).projected  # the character model's d = 384 > 65
    net = random_flm(0)
    assert flm.StateSpace(K, [net]).projected
    assert not flm.StateSpace(K, [net], projected=False).projected
    assert not flm.StateSpace(K, [lambda z, t: z]).projected  # a plain function reads x_g itself
    small = [random_flm(i, K=40) for i in range(3)]
    assert flm.StateSpace(40, small[:1]).projected and not flm.StateSpace(40, small).projected  # 3 d >= K
    residual = random_flm(1, two_times=True, learn_loss_weight=1)
    shapes = []
    randn = torch.randn

    def recording(*size, **kw):
        shapes.append(tuple(size[0]) if isinstance(size[0], (tuple, list, torch.Size)) else size)
        return randn(*size, **kw)
    monkeypatch.setattr(torch, 'randn', recording)
    x = torch.randint(K, (8, L))
    flm.flm_loss(net, x, flm.g_table(K), K).backward()
    stages.stage1_loss(residual, net, x, flm.g_table(K), K).backward()
    flm.euler_sample(net, flm.g_table(K), (8, L, K), 3, x, x > K // 2, eta=0.5)
    stages.stage1_sample(net, residual, flm.g_table(K), (8, L, K), 3, x, x > K // 2)
    assert shapes and all(shape[-1] in (D_MODEL, 2 * D_MODEL) for shape in shapes), shapes


def mean_and_error(f, repeats):
    """Mean over `repeats` calls of f(seed) -> vector, and its standard error."""
    v = torch.stack([f(seed) for seed in range(repeats)])
    return v.mean(0), v.std(0) / repeats ** 0.5


def assert_same_mean(f_dense, f_projected, repeats):
    """The two paths' means agree within Monte Carlo error. Seeds are shared, so times and tokens are
    common and only the noise differs. The z-scores of the ~10^4 coordinates, with standard errors from
    `repeats` draws, have a mean square about 1 (measured 0.77 - 1.04 over seeds) and a largest |z|
    below 6.2; a projected noise drawn with C in place of C^T gives 2.8 - 93, and one with no gradient
    through its factor 2.3 in flowmap_loss's test (flm_loss's, where the noise's share of E's gradient is
    small, does not see that one)."""
    (m1, e1), (m2, e2) = mean_and_error(f_dense, repeats), mean_and_error(f_projected, repeats)
    z = (m1 - m2) / (e1 ** 2 + e2 ** 2).sqrt()
    assert z.pow(2).mean() < 1.5 and z.abs().max() < 10, (z.pow(2).mean(), z.abs().max())


def loss_and_gradient(loss_fn, net, B):
    """f(seed) -> the loss and its gradient (one vector) on the seed's batch of B sequences."""
    x_all = torch.randint(K, (32 * B, L), generator=torch.Generator().manual_seed(0))

    def f(seed):
        torch.manual_seed(seed)
        net.zero_grad()
        loss = loss_fn(x_all[seed * B:(seed + 1) * B])
        loss.backward()
        return torch.cat([loss.detach()[None]] + [p.grad.flatten() for p in net.parameters() if p.grad is not None])
    return f


def test_flm_loss_and_its_gradient_are_the_dense_paths_in_expectation():
    net, table = random_flm(0), flm.g_table(K)
    assert_same_mean(loss_and_gradient(lambda x: flm.flm_loss(net, x, table, K, projected=False), net, B=256),
                     loss_and_gradient(lambda x: flm.flm_loss(net, x, table, K, projected=True), net, B=256),
                     repeats=16)


def test_flowmap_loss_and_its_gradient_are_the_dense_paths_in_expectation():
    # a student made from its teacher (one E for both: the jittered joint noise) that has moved elsewhere
    teacher, table = random_flm(0), flm.g_table(K)
    student = flm.flow_map_student(teacher, stage=2).double()
    with torch.no_grad():
        for name, p in student.named_parameters():
            if not name.startswith('embed'):
                p.normal_(0, 0.1)

    def loss(projected):
        return lambda x: flm.flowmap_loss(student, teacher, x, table, K, boundary_every=4, projected=projected)
    assert_same_mean(loss_and_gradient(loss(False), student, B=128), loss_and_gradient(loss(True), student, B=128),
                     repeats=12)


def same_noise(n, B, seed=0):
    """n K-dimensional noises (B, L, K), to hand both paths the same: an iterator for each."""
    gen = torch.Generator().manual_seed(seed)
    eps = [torch.randn(B, L, K, generator=gen, dtype=torch.float64) for _ in range(n)]
    return lambda: iter(eps)


def prompt(B):
    x_known = torch.randint(K, (B, L), generator=torch.Generator().manual_seed(1))
    known = torch.zeros(B, L, dtype=torch.bool)
    known[:, 0] = True
    return x_known, known


def assert_same_tokens(sample):
    dense, projected = sample(False), sample(True)
    assert torch.equal(dense, projected)
    assert len(set(dense.flatten().tolist())) > 10  # not a degenerate answer


def test_euler_sampler_writes_the_dense_paths_tokens():
    net, table, B, steps = random_flm(0), flm.g_table(K), 64, 6
    noise = same_noise(steps + 1, B)
    assert_same_tokens(lambda projected: flm.euler_sample(net, table, (B, L, K), steps, projected=projected,
                                                          noise=noise()))
    # with fresh noise after each step and a prompt: the noises are z, the prompt's eps, each step's xi
    assert_same_tokens(lambda projected: flm.euler_sample(net, table, (B, L, K), steps, *prompt(B), eta=0.6,
                                                          projected=projected, noise=noise()))


def test_flow_map_sampler_writes_the_dense_paths_tokens():
    student, table, B = random_flm(2, two_times=True), flm.g_table(K), 64
    noise = same_noise(2, B)
    for steps in (1, 3):
        assert_same_tokens(lambda projected: flm.euler_sample(student, table, (B, L, K), steps, flow_map=True,
                                                              projected=projected, noise=noise()))


def test_stage1_sampler_writes_the_dense_paths_tokens():
    # teacher and r_phi with different E. The dense sampler answers argmax of the last state, X_{s,1}(z);
    # the projected one that of stage1_endpoint, the same tokens, as G(1) = 1 for every K
    teacher, residual, table, B = random_flm(0), random_flm(3, two_times=True), flm.g_table(K), 64
    assert table[-1] == 1.0
    noise = same_noise(2, B)
    for steps in (1, 4):
        assert_same_tokens(lambda projected: stages.stage1_sample(teacher, residual, table, (B, L, K), steps, *prompt(B),
                                                               projected=projected, noise=noise()))
