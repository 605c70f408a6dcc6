"""
The first paper version's flow-map distillation in two stages (method.md 8), kept beside the
default one-network recipe of flm.py 5 so the two can be compared (docs/results.md 4). It uses
flm.py's pieces: the flow, G, the network, the flow-map times and the d-dimensional state.

Stage 1 (semigroup self-distillation): a two-time residual network r_phi(x, s, t), raw outputs in
R^K, corrects the frozen teacher's Euler step to second order,
    X_{s,t}(x) = x + Delta * v_T(x, s) + 1/2 * Delta^2 * r_phi(x, s, t),     Delta = g_t - g_s
and is trained so that one jump s -> t equals two half jumps s -> u -> t (u the midpoint time).
Both sides are compared in denoiser units:
    pred   = x_s + (1 - g_s) / Delta * (X_{s,t}(x_s) - x_s) = D_T(x_s, s) + 1/2 Delta (1 - g_s) r_phi
    target = the same of the two half jumps, with no gradient through it
Stage 2: one network h_psi(x, s, t) with the FLM's output form,
    Y_{s,t}(x) = x + Delta * (softmax(h_psi(x, s, t)) - x) / (1 - g_s)     (= flm.jump)
trained to match stage 1's X_{s,t}: one pass per jump; its sampler is flm.euler_sample(flow_map=True).
"""

import torch

from flm import G, StateSpace, flow_map_times, interpolant, keep_known, learned_weighting, velocity


def stage1_flow_map(D_T, r, x, g_s, g_t):
    """X_{s,t}(x) = x + Delta v_T(x, s) + 1/2 Delta^2 r_phi(x, s, t); D_T the teacher's denoiser at (x, s)."""
    Delta = g_t - g_s
    return x + Delta * velocity(D_T, x, g_s) + 0.5 * Delta ** 2 * r


def stage1_endpoint(D_T, r, g_s, g_t):
    """X_{s,t}(x) in denoiser units, x + (1 - g_s) / Delta * (X_{s,t}(x) - x) = D_T + 1/2 Delta (1 - g_s) r:
    stage 1's prediction, with no x term; X_{s,t}(x) = (1 - g_t)/(1 - g_s) x + Delta/(1 - g_s) * this."""
    return D_T + 0.5 * (g_t - g_s) * (1 - g_s) * r


def semigroup_target(x_s, g_s, g_u, g_t, D_s, r_su, D_u, r_ut):
    """Stage 1's target: two half jumps s -> u -> t, as the average velocity vbar in denoiser units.
    D_s = D_T(x_s, s), r_su = r_phi(x_s, s, u), and at x_u = X_{s,u}(x_s): D_u = D_T(x_u, u),
    r_ut = r_phi(x_u, u, t). The coefficient of x_s is 0 (method.md 7c).
    dg1, dg2 are method.md's level steps D1 = g_u - g_s and D2 = g_t - g_u (not denoisers)."""
    dg1, dg2 = g_u - g_s, g_t - g_u
    v_s = velocity(D_s, x_s, g_s)
    x_u = x_s + dg1 * v_s + 0.5 * dg1 ** 2 * r_su
    v_u = velocity(D_u, x_u, g_u)
    vbar = (dg1 * (v_s + dg1 / 2 * r_su) + dg2 * (v_u + dg2 / 2 * r_ut)) / (dg1 + dg2)
    return x_s + (1 - g_s) * vbar


def stage1_loss(student, teacher, x, table, K, boundary_every=64, weighted=True, projected=None):
    """method.md 8, stage 1: K * mean over K of (target - pred)^2 per token, for token ids x (B, L).
    `student` is r_phi (may be wrapped by DDP), `teacher` the frozen FLM. projected: as flm_loss's."""
    B, L = x.shape
    s, u, t = flow_map_times(B, x.device, boundary_every)
    g_s, g_u, g_t = (G(v, table)[:, None, None] for v in (s, u, t))
    space, (student, teacher) = StateSpace.of(K, [student, teacher], projected)
    x_s = interpolant(x, g_s[:, 0, 0], space.noise(B, L, device=x.device), space)
    with torch.no_grad():
        D_s = torch.softmax(teacher(x_s, s).float(), -1)
        r_su = student(x_s, s, u).float()
        x_u = stage1_flow_map(space.project(D_s), space.project(r_su), x_s, g_s, g_u)
        D_u = torch.softmax(teacher(x_u, u).float(), -1)
        r_ut = student(x_u, u, t).float()
        # x_s's coefficient in the target is 0 (method.md 7c): a projected x_s, not in R^K, is left out
        target = semigroup_target(0.0 if space.projected else x_s, g_s, g_u, g_t, D_s, r_su, D_u, r_ut)
    r, w = student(x_s, s, t, with_weight=True) if weighted else (student(x_s, s, t), None)
    pred = stage1_endpoint(D_s, r.float(), g_s, g_t)
    loss = K * (target - pred).pow(2).mean(-1)  # per token: the sum over the K coordinates
    return learned_weighting(loss.mean(1), w)


def flow_map_gap(D_T, r, D_psi, g_s, g_t):
    """X_{s,t}(x) - Y_{s,t}(x) = Delta / (1 - g_s) * (D_T + 1/2 Delta (1 - g_s) r - D_psi): the x terms
    cancel. Computed in this form, the gap of a tiny jump keeps its digits (x - x would not)."""
    return (g_t - g_s) / (1 - g_s) * (stage1_endpoint(D_T, r, g_s, g_t) - D_psi)


def stage2_loss(student, teacher, residual, x, table, K, boundary_every=128, weighted=False, projected=None):
    """method.md 8, stage 2: K * mean over K of (X_{s,t}(x_s) - Y_{s,t}(x_s))^2 per token.
    `student` is h_psi; `teacher` and `residual` (stage 1's r_phi) are frozen. Unweighted by default, as in
    the paper's code. projected: as flm_loss's; the gap has no x term, so x_s only feeds the networks."""
    B, L = x.shape
    s, _, t = flow_map_times(B, x.device, boundary_every)
    g_s, g_t = G(s, table)[:, None, None], G(t, table)[:, None, None]
    space, (student, teacher, residual) = StateSpace.of(K, [student, teacher, residual], projected)
    x_s = interpolant(x, g_s[:, 0, 0], space.noise(B, L, device=x.device), space)
    with torch.no_grad():
        D_T = torch.softmax(teacher(x_s, s).float(), -1)
        r = residual(x_s, s, t).float()
    h, w = student(x_s, s, t, with_weight=True) if weighted else (student(x_s, s, t), None)
    loss = K * flow_map_gap(D_T, r, torch.softmax(h.float(), -1), g_s, g_t).pow(2).mean(-1)
    return learned_weighting(loss.mean(1), w)


@torch.no_grad()
def stage1_sample(teacher, residual, table, shape, steps, x_known=None, known=None, generator=None,
                  device="cpu", projected=None, noise=None):
    """Stage 1's sampler: z <- X_{t_i, t_i+1}(z), two passes (teacher and r_phi) per step; the
    answer is argmax of the last state. Prompting by replacement, projected and noise as in euler_sample."""
    assert steps >= 1
    B, L, K = shape
    space, (teacher, residual) = StateSpace.of(K, [teacher, residual], projected)
    draw = space.drawer(B, L, generator, device, noise)
    z = draw()
    eps_known = None if known is None else draw()
    for i in range(steps):
        s, t = torch.full((B,), i / steps, device=device), torch.full((B,), (i + 1) / steps, device=device)
        g_s, g_t = G(s, table)[:, None, None], G(t, table)[:, None, None]
        z = keep_known(z, x_known, known, eps_known, g_s[:, 0, 0], space)
        D_T = torch.softmax(teacher(z, s).float(), -1)
        r = residual(z, s, t).float()
        z = stage1_flow_map(space.project(D_T), space.project(r), z, g_s, g_t)
    # The last state is X_{s,1}(z) = (1 - G(1))/(1 - g_s) z + Delta/(1 - g_s) stage1_endpoint(D_T, r); with
    # G(1) = 1 the z term is 0, so the argmax is the endpoint's: a projected z has no K coordinates.
    x = stage1_endpoint(D_T, r, g_s, g_t).argmax(-1) if space.projected else z.argmax(-1)
    return x if known is None else torch.where(known, x_known, x)
