"""
Every kind of network this repository trains and samples, in one place: how to build it
from model_args, its training loss, its sampler, its evaluation figures, and how a
checkpoint of it is loaded. train.py, sample.py, eval.py, sweep.py and bench.py go through
here; flm.py knows nothing of the baselines.

  flm     the FLM, f_theta(x_g, t) -> logits (flm.py sections 1-4)
  stage1  a flow map, stage 1: the frozen FLM teacher plus a residual network r_phi (flm.py 5)
  stage2  a flow map, stage 2: one two-time network h_psi (flm.py 5)
  flowmap a flow map in one stage: one two-time network h_psi on a KL semigroup target (flm.py 8)
  ar      the autoregressive baseline (baselines.py)
  mdlm    the masked-diffusion baseline (baselines.py)
"""

import os

import torch
import torch.nn.functional as F

import baselines
import flm
from configurator import die

KINDS = ('flm', 'stage1', 'stage2', 'flowmap', 'ar', 'mdlm')
FLOW_MAPS = ('stage1', 'stage2', 'flowmap')
DEFAULT_STEPS = {'flm': 64, 'stage1': 1, 'stage2': 1, 'flowmap': 1, 'mdlm': 128, 'ar': 0}  # 0: AR, one pass per token
BOUNDARY_EVERY = {'stage1': 64, 'stage2': 128, 'flowmap': 64}  # the boundary jump (0, 1): once in so many (method.md)
WEIGHTED = ('stage1',)  # the kinds that use the learnable loss weighting by default (the paper's code)
EVAL_T = (0.1, 0.3, 0.5, 0.7, 0.9)  # the eval grid: model times t (FLM), masked shares (MDLM)
RENAMED = {'flowmap-1': 'stage1', 'flowmap-2': 'stage2'}  # kinds' names in older checkpoints


def network(kind, model_args):
    """A freshly initialised network of the kind."""
    cfg = flm.FLMConfig(**model_args)
    return baselines.Baseline(cfg, kind) if kind in baselines.KINDS else flm.FLM(cfg)


def frozen(kind, model_args, state_dict, device):
    """A network of the kind with the given weights, in eval mode and without gradients."""
    net = network(kind, model_args)
    # w of the learnable loss weighting is for training only: it keeps its fresh weights, so that a
    # checkpoint whose w was a layer on the shared conditioning (before flm.LossWeight) still loads
    fresh_w = {k: v for k, v in net.state_dict().items() if k.startswith('loss_weight.')}
    net.load_state_dict({**{k: v for k, v in state_dict.items() if not k.startswith('loss_weight.')}, **fresh_w})
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval().to(device)


def load_checkpoint(path, flag, device='cpu'):
    """A checkpoint written by train.py, loaded with weights_only=True (a file cannot run code).
    flag: the option that named the file, for the one-line errors."""
    if not os.path.isfile(path):
        die(f"{flag}: no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        # torch's message suggests weights_only=False, i.e. running the file's code: not passed on
        why = ("it holds objects other than tensors and plain values" if 'eights only' in str(e)
               else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        die(f"{flag}: cannot load {path}: {why}")
    if not isinstance(ckpt, dict) or not {'model_args', 'model', 'ema', 'meta', 'config'} <= set(ckpt):
        die(f"{flag}: {path} is not a checkpoint written by train.py")
    kind = ckpt.get('kind', 'flm')
    ckpt['kind'] = RENAMED.get(kind, kind)
    if ckpt['kind'] not in KINDS:
        die(f"{flag}: {path} is a '{kind}' checkpoint; the kinds are {', '.join(KINDS)}")
    return ckpt


def require_kind(ckpt, path, flag, kind):
    if ckpt['kind'] != kind:
        die(f"{path} is a '{ckpt['kind']}' checkpoint; {flag} must be a '{kind}' checkpoint")


def teacher_of(stage1_ckpt, device):
    """The frozen FLM teacher that a stage-1 checkpoint carries: its sampler needs it, and so
    does stage 2, which takes both of its frozen networks from that checkpoint."""
    return frozen('flm', stage1_ckpt['teacher_args'], stage1_ckpt['teacher_weights'], device)


def check_sources(kind, teacher, stage1):
    """One-line errors for a distillation run without the checkpoint it distils, or with one that
    belongs to another kind: stage 1 and flowmap read --teacher (an FLM), stage 2 --stage1."""
    if kind in ('stage1', 'flowmap') and not teacher:
        die(f"--kind={kind} needs --teacher=path/to/the/flm/ckpt.pt")
    if kind == 'stage2' and not stage1:
        die("--kind=stage2 needs --stage1=path/to/the/stage1/ckpt.pt (train it with --kind=stage1)")
    if (kind not in ('stage1', 'flowmap') and teacher) or (kind != 'stage2' and stage1):
        die(f"--teacher goes with --kind=stage1 or flowmap and --stage1 with --kind=stage2; this run is --kind={kind}")


def frozen_networks(kind, teacher, stage1, resumed, vocab_size, block_size, device):
    """Distillation's frozen networks (EMA weights), checked against the run's vocabulary and block
    size: (FLM teacher, stage 1's r_phi, what the run's checkpoints carry). Stage 1 reads --teacher,
    or when resumed its own checkpoint; stage 2 takes both from the --stage1 checkpoint; flowmap reads
    --teacher, also when resumed (its sampler needs no teacher, so its checkpoint carries none)."""
    if kind not in FLOW_MAPS:
        return None, None, {}

    def read(path, flag, want):
        ckpt = load_checkpoint(path, flag, device)
        require_kind(ckpt, path, flag, want)
        args = ckpt['model_args']
        if args['vocab_size'] != vocab_size or args['block_size'] != block_size:
            die(f"{flag} {path} has vocab_size={args['vocab_size']}, block_size={args['block_size']}; "
                f"this run has {vocab_size}, {block_size}")
        return ckpt
    if kind == 'stage2':
        S = read(stage1, '--stage1', 'stage1')
        return teacher_of(S, device), frozen('stage1', S['model_args'], S['ema'], device), {}
    if kind == 'flowmap':
        T = read(teacher, '--teacher', 'flm')
        return frozen('flm', T['model_args'], T['ema'], device), None, {}
    T = resumed or read(teacher, '--teacher', 'flm')
    carried = ({k: T[k] for k in ('teacher_args', 'teacher_weights')} if resumed
               else {'teacher_args': T['model_args'], 'teacher_weights': T['ema']})
    return teacher_of(carried, device), None, carried


def from_checkpoint(ckpt, device, weights='ema'):
    """(network, teacher): the checkpoint's network with its EMA (or raw) weights, in eval mode,
    and for a stage-1 flow map the teacher its sampler needs (else None)."""
    net = frozen(ckpt['kind'], ckpt['model_args'], ckpt[weights], device)
    return net, teacher_of(ckpt, device) if ckpt['kind'] == 'stage1' else None


def loss_fn(kind, K, table, teacher=None, residual=None, boundary_every=0, weighted=False, diagonal_share=0.5,
            targets_from=None):
    """The kind's training loss, loss(model, x) for token ids x (B, L); `model` may be wrapped
    (DDP, compile). Distillation's frozen networks: the FLM teacher (all flow maps), stage 1's r_phi
    (stage 2); boundary_every = 0: the kind's BOUNDARY_EVERY; diagonal_share, targets_from: flowmap's (flm.py 8)."""
    boundary_every = boundary_every or BOUNDARY_EVERY.get(kind, 1)
    if kind == 'flm':
        return lambda model, x: flm.flm_loss(model, x, table, K)
    if kind == 'stage1':
        return lambda model, x: flm.stage1_loss(model, teacher, x, table, K, boundary_every, weighted)
    if kind == 'stage2':
        return lambda model, x: flm.stage2_loss(model, teacher, residual, x, table, K, boundary_every, weighted)
    if kind == 'flowmap':
        return lambda model, x: flm.flowmap_loss(model, teacher, x, table, K, boundary_every, diagonal_share, weighted,
                                                 targets_from=targets_from)
    if kind == 'ar':
        return lambda model, x: baselines.ar_loss(model, x, K)
    return lambda model, x: baselines.mdlm_loss(model, x, K)


def sampler(kind, net, table, teacher=None):
    """The kind's sampler: sample(B, L, steps, x_known, known, generator, device, eta) -> ids (B, L).
    x_known and known (B, L) fix positions (a prompt); eta is the FLM's fresh noise (flm.py 4)."""
    K = net.cfg.vocab_size

    def sample(B, L, steps, x_known=None, known=None, generator=None, device='cpu', eta=0.0):
        if kind == 'ar':
            return baselines.ar_sample(net, (B, L), x_known, known, generator=generator, device=device)
        if kind == 'mdlm':
            return baselines.mdlm_sample(net, (B, L), K, steps, x_known, known, generator=generator, device=device)
        if kind == 'stage1':
            return flm.stage1_sample(teacher, net, table, (B, L, K), steps, x_known, known, generator=generator,
                                     device=device)
        # the jump of a stage-2 or flowmap flow map has the Euler step's form (flm.py 5, 8): one jump per step
        return flm.euler_sample(net, table, (B, L, K), steps, x_known, known, generator=generator, device=device,
                                eta=eta, flow_map=kind in ('stage2', 'flowmap'))
    return sample


@torch.no_grad()
def eval_ce(kind, net, x, table, log_pi, generator):
    """The cross-entropy figures of token ids x (B, L), with noise or masks from `generator`:
    (CE at each eval point, CE of a model that ignores context at the middle point). FLM: CE at
    t in EVAL_T, against the per-token Bayes denoiser at t = 0.5; MDLM: CE of the masked tokens
    at masked shares EVAL_T; AR: its NLL; both against the unigram CE. Not for flow maps."""
    K = net.cfg.vocab_size
    unigram = -torch.log_softmax(log_pi, -1)[x].mean()  # no (B, L, K) tensor for a large K
    if kind == 'ar':
        return [baselines.ar_loss(net, x, K)], unigram
    ces = []
    space = flm.StateSpace(K, [net]) if kind == 'flm' else None  # the network's input in d dims where K > d
    for tj in EVAL_T:
        if kind == 'mdlm':
            mask = torch.rand(x.shape, generator=generator, device=x.device) < tj
            ces.append(F.cross_entropy(net(torch.where(mask, K, x)).float()[mask], x[mask]))
            continue
        t = torch.full((x.size(0),), tj, device=x.device)
        g = flm.G(t, table)
        x_g = flm.interpolant(x, g, space.noise(*x.shape, generator, x.device), space)
        ces.append(F.cross_entropy(space.run(net, x_g, t).flatten(0, 1).float(), x.flatten()))
        if tj == 0.5:  # the reference sees what the network sees: x_g, or its image under E where K > d
            E = flm.input_embedding(net).float() if space.projected else None
            unigram = F.cross_entropy(flm.unigram_denoiser_logits(x_g.float(), g, log_pi, E).flatten(0, 1), x.flatten())
    return ces, unigram
