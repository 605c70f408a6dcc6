"""
What a run needs around the method: every kind of network train.py trains and sample.py samples,
how to build one, load its checkpoint and evaluate it; the two-stage recipe's and the baselines'
losses and samplers; the training step with its on-device non-finite guard, and its model FLOPs (the
logged MFU); the device and autocast, atomic saves, a writable out_dir, Weights & Biases.
flm.py knows nothing of these.

  flm     the FLM, f_theta(x_g, t) -> logits (flm.py sections 1-4)
  flowmap its flow map: one two-time network h_psi on a KL semigroup target (flm.py 5)
  stage1  the two-stage flow map, stage 1: the frozen FLM teacher plus a residual network r_phi (stages.py)
  stage2  the two-stage flow map, stage 2: one two-time network h_psi (stages.py)
  ar      the autoregressive baseline (tools/baselines.py)
  mdlm    the masked-diffusion baseline (tools/baselines.py)
"""

import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import flm
import stages
from configurator import die
from tools import baselines

KINDS = ('flm', 'stage1', 'stage2', 'flowmap', 'ar', 'mdlm')
FLOW_MAPS = ('stage1', 'stage2', 'flowmap')
DEFAULT_STEPS = {'flm': 64, 'stage1': 1, 'stage2': 1, 'flowmap': 1, 'mdlm': 128, 'ar': 0}  # 0: AR, one pass per token
PAPER_STEPS = {'flm': 1024, 'stage2': 1}  # a release's default: the steps of the paper's evaluation (its Gen PPL)
BOUNDARY_EVERY = {'stage1': 64, 'stage2': 128, 'flowmap': 64}  # the boundary jump (0, 1): once in so many (method.md)
WEIGHTED = ('stage1',)  # the kinds that use the learnable loss weighting by default (the paper's code)
EVAL_T = (0.1, 0.3, 0.5, 0.7, 0.9)  # the eval grid: model times t (FLM), masked shares (MDLM)


def network(kind, model_args):
    """A freshly initialised network of the kind."""
    # model_args may name logit_softcap, 0 wherever train.py wrote it and no switch of FLMConfig: left out
    cfg = flm.FLMConfig(**{k: v for k, v in model_args.items() if k != 'logit_softcap'})
    return baselines.Baseline(cfg, kind) if kind in baselines.KINDS else flm.FLM(cfg)


def frozen(kind, model_args, state_dict, device):
    """A network of the kind with the given weights, in eval mode and without gradients."""
    net = network(kind, model_args)
    # w of the learnable loss weighting is for training only: sampling never reads it
    fresh_w = {k: v for k, v in net.state_dict().items() if k.startswith('loss_weight.')}
    load_weights(net, {**{k: v for k, v in state_dict.items() if not k.startswith('loss_weight.')}, **fresh_w},
                 f"a '{kind}' network")
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval().to(device)


def load_checkpoint(path, flag, device='cpu', resume=False):
    """A checkpoint written by train.py, loaded with weights_only=True (a file cannot run code), its
    parts checked to be what train.py writes (and with resume=True, what a resumed run needs).
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
    problem = checkpoint_problem(ckpt, resume)
    if problem:
        die(f"{flag}: {path} is not a checkpoint written by train.py: {problem}")
    kind = ckpt.get('kind', 'flm')
    if kind not in KINDS:
        die(f"{flag}: {path} is a '{kind}' checkpoint; the kinds are {', '.join(KINDS)}")
    return ckpt


SIZES = ('vocab_size', 'block_size', 'n_layer', 'n_head', 'n_embd', 'n_cond')  # model_args that must be > 0


def checkpoint_problem(ckpt, resume=False):
    """What is wrong with the parts of a loaded checkpoint (None: nothing), before any of them is used."""
    args, fields = ckpt['model_args'], set(flm.FLMConfig.__dataclass_fields__)
    if not isinstance(args, dict) or not set(SIZES) <= set(args) or not set(args) <= fields:
        return f"model_args must give {', '.join(SIZES)} (and only FLMConfig's fields)"
    if not all(type(args[k]) is int and args[k] > 0 for k in SIZES) or args['n_embd'] % (2 * args['n_head']):
        return "model_args' sizes must be whole numbers > 0, with n_embd split into n_head heads of even width"
    for part in ('model', 'ema'):
        if not isinstance(ckpt[part], dict) or not all(isinstance(v, torch.Tensor) for v in ckpt[part].values()):
            return f"'{part}' is not a dict of weights"
    if not isinstance(ckpt['config'], dict) or not isinstance(ckpt['config'].get('dataset'), str):
        return "its config does not name the dataset"
    if not isinstance(ckpt['meta'], dict):
        return "'meta' is not a dict"
    if resume and not (type(ckpt.get('iter_num')) is int and ckpt['iter_num'] >= 0
                       and isinstance(ckpt.get('optimizer'), dict) and isinstance(ckpt.get('rng'), list)):
        return "a resumed run needs its iter_num, optimizer and rng"
    return None


def load_weights(module, state, what):
    """module.load_state_dict(state), where a state that does not fit is a one-line error."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        die(f"{what}: the saved state does not fit: {str(e).strip().splitlines()[0][:200]}")


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
        die(f"--kind={kind} needs --teacher=path/to/the/flm/ckpt.pt "
            "(or a released FLM: FLM-B-OWT, FLM-B-LM1B, a folder)")
    if kind == 'stage2' and not stage1:
        die("--kind=stage2 needs --stage1=path/to/the/stage1/ckpt.pt (train it with --kind=stage1)")
    if (kind not in ('stage1', 'flowmap') and teacher) or (kind != 'stage2' and stage1):
        die(f"--teacher goes with --kind=stage1 or flowmap and --stage1 with --kind=stage2; this run is --kind={kind}")


def student(kind, teacher, weighted):
    """A flow map's trained network, made from its FLM teacher (flm.flow_map_student). Without the loss
    weighting its w is frozen: unused, it would leave DDP waiting for its gradients."""
    net = flm.flow_map_student(teacher, 1 if kind == 'stage1' else 2)
    if not weighted:
        net.loss_weight.requires_grad_(False)
    return net


def frozen_networks(kind, teacher, stage1, resumed, vocab_size, block_size, device):
    """Distillation's frozen networks (EMA weights), checked against the run's vocabulary and block
    size: (FLM teacher, stage 1's r_phi, what the run's checkpoints carry). --teacher is a train.py
    checkpoint or a released FLM (tools/pretrained.py: FLM-B-OWT, owner/name, or a folder). Stage 1 reads --teacher,
    or when resumed its own checkpoint; stage 2 takes both from the --stage1 checkpoint; flowmap reads
    --teacher, also when resumed (its sampler needs no teacher, so its checkpoint carries none)."""
    if kind not in FLOW_MAPS:
        return None, None, {}

    def read(path, flag, want):
        if want == 'flm' and not os.path.isfile(path) and not path.endswith('.pt'):  # a released FLM
            from tools import pretrained
            return pretrained.release_as_checkpoint(path, flag, vocab_size, block_size, device)
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
    if (T.get('teacher_args') if resumed else T['model_args']).get('self_cond'):
        die("--kind=stage1: the two stages do not distil a self-conditioned FLM; use --kind=flowmap")
    carried = ({k: T[k] for k in ('teacher_args', 'teacher_weights')} if resumed
               else {'teacher_args': T['model_args'], 'teacher_weights': T['ema']})
    return teacher_of(carried, device), None, carried


def from_checkpoint(ckpt, device, weights='ema'):
    """(network, teacher): the checkpoint's network with its EMA (or raw) weights, in eval mode,
    and for a stage-1 flow map the teacher its sampler needs (else None)."""
    net = frozen(ckpt['kind'], ckpt['model_args'], ckpt[weights], device)
    return net, teacher_of(ckpt, device) if ckpt['kind'] == 'stage1' else None


def for_sampling(path, device, weights='ema'):
    """sample.py's checkpoint: (kind, network, stage 1's teacher or None, the data's meta with its dataset)."""
    if not os.path.isfile(path):
        die(f"no checkpoint at {path}; train one with python train.py (or pass --ckpt=path)")
    ckpt = load_checkpoint(path, 'sample.py', device)
    if not all(torch.isfinite(w).all() for w in ckpt[weights].values() if w.is_floating_point()):
        die(f"{path} has weights that are not finite numbers (a diverged run); sample an earlier checkpoint")
    net, teacher = from_checkpoint(ckpt, device, weights)
    return ckpt['kind'], net, teacher, {**ckpt['meta'], 'dataset': ckpt['config']['dataset']}


def sampler_eta(kind, eta, released=False):
    """sample.py's --eta for the kind: -1 is the kind's default (0.6 for an FLM of this project, 0 for a
    release or a flow map); a one-line error for a sampler that has no fresh noise."""
    if kind in ('ar', 'mdlm') and eta != -1:
        die(f"--eta is the flow samplers' fresh noise; the {kind} sampler has none")
    eta = eta if eta >= 0 else (0.6 if kind == 'flm' and not released else 0.0)
    if kind == 'stage1' and eta > 0:
        die("--eta: the stage-1 sampler has no fresh-noise option (its state is not a denoiser's estimate); use --eta=0")
    return eta


def prompt_positions(prompt, B, L, device):
    """(x_known, known): the prompt's token ids at the start of each of B blocks of L, and where they are."""
    x_known = torch.zeros(B, L, dtype=torch.long, device=device)
    x_known[:, :len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
    known = torch.zeros(B, L, dtype=torch.bool, device=device)
    known[:, :len(prompt)] = True
    return x_known, known


MODEL_OPTIONS = ('n_layer', 'n_head', 'n_embd', 'n_cond', 'dropout', 'ln_scale', 'attn_softcap', 'time_scale',
                 'embed_dropout', 'self_cond')  # train.py's options of the network


def options_of(source, model_args, given, differing=None):
    """model_args, the network of another run (a teacher, a release): model options given with other values
    are a one-line error (differing='error': a flow map's network is its teacher's), or a note that they
    are not applied ('note': a continued release's network is the release's); None: neither."""
    other = [k for k in MODEL_OPTIONS if k in given and given[k] != model_args.get(k)]
    if other and differing == 'error':
        k = other[0]
        die(f"--{k}={given[k]}: a flow map's network is its teacher's ({k}={model_args[k]}); drop the option")
    if other and differing == 'note':
        print(f"note: the network is {source}'s: {', '.join(f'--{k}={given[k]!r}' for k in other)} not applied")
    return model_args


def restore_rng(states, rank, world_size, device_type, master_process):
    """Each rank continues its own random stream where the checkpoint left it (with as many processes)."""
    if len(states) == world_size:
        torch.set_rng_state(states[rank]['cpu'])
        if device_type == 'cuda' and states[rank]['cuda'] is not None:
            torch.cuda.set_rng_state(states[rank]['cuda'])
    elif master_process:
        print(f"note: checkpoint has RNG states of {len(states)} processes, this run has {world_size}: fresh streams")


def option_rules(c):
    """train.py's options: {key: (valid, what it must be)} for configurator.check."""
    from tools import pretrained
    FLOAT32_MAX = float(np.finfo(np.float32).max)
    kind, beta1 = c['kind'], c['beta1']
    return {
        'init_from': (c['init_from'] in ('scratch', 'resume') or (kind == 'flm' and pretrained.names_a_release(c['init_from'])),
                      f"'scratch', 'resume', or with --kind=flm a released FLM ({', '.join(pretrained.SHORT_NAMES[::2])}, "
                      "owner/name on the hub, or a folder in its layout)"),
        'kind': (kind in KINDS, f"one of {', '.join(KINDS)}"),
        'n_head': (c['n_head'] > 0 and c['n_embd'] % c['n_head'] == 0 and c['n_embd'] // c['n_head'] % 2 == 0,
                   f"> 0 and divide n_embd ({c['n_embd']}) into heads of even width"),
        # AdamW's first step moves a weight by up to learning_rate / (1 - beta1), a float32 scalar
        'learning_rate': (0 < c['learning_rate'] < FLOAT32_MAX * (1 - beta1),
                          f"> 0 and below {FLOAT32_MAX * (1 - beta1):.3g} (float32's largest number times 1 - beta1)"),
        'min_lr': (0 <= c['min_lr'] < FLOAT32_MAX * (1 - beta1), f">= 0 and below {FLOAT32_MAX * (1 - beta1):.3g}"),
        'dropout': (0 <= c['dropout'] < 1, "in [0, 1)"), 'ema_decay': (0 <= c['ema_decay'] < 1, "in [0, 1)"),
        'beta1': (0 <= beta1 < 1, "in [0, 1)"), 'beta2': (0 <= c['beta2'] < 1, "in [0, 1)"),
        'weight_decay': (c['weight_decay'] >= 0, ">= 0"), 'grad_clip': (c['grad_clip'] >= 0, ">= 0 (0: no clipping)"),
        'attn_softcap': (c['attn_softcap'] >= 0, ">= 0 (0: no cap)"), 'peak_flops': (c['peak_flops'] >= 0, ">= 0 (0: a known GPU's)"),
        'warmup_iters': (c['warmup_iters'] >= 0, ">= 0"), 'boundary_every': (c['boundary_every'] >= 0, ">= 0"),
        'diagonal_share': (0 <= c['diagonal_share'] <= 1, "in [0, 1]"),
        'ema_targets': (not c['ema_targets'] or kind == 'flowmap', f"False for --kind={kind} (it is --kind=flowmap's)"),
        'self_cond': (not c.get('self_cond') or kind in ('flm', 'flowmap'),
                      f"False for --kind={kind} (self-conditioning is the FLM's, and its flow map's from its teacher)"),
        **{k: (c[k] > 0, "> 0") for k in (
            'batch_size', 'block_size', 'max_iters', 'eval_interval', 'log_interval', 'eval_iters', 'eval_sample_steps',
            'gradient_accumulation_steps', 'n_layer', 'n_embd', 'n_cond', 'time_scale', 'eval_samples', 'eval_ref_steps', 'lr_decay_iters')}}


def loss_fn(kind, K, table, teacher=None, residual=None, boundary_every=0, weighted=False, diagonal_share=0.5):
    """The kind's training loss, loss(model, x) for token ids x (B, L); `model` may be wrapped (DDP, compile).
    teacher: distillation's frozen FLM; residual: stage 1's r_phi (stage 2); boundary_every 0: the kind's.
    train.py names flm.flm_loss and flm.flowmap_loss itself; the two stages' losses are stages.py's."""
    boundary_every = boundary_every or BOUNDARY_EVERY.get(kind, 1)
    if kind == 'flm':
        return lambda model, x: flm.flm_loss(model, x, table, K, self_cond=self_conditioned(model))
    if kind == 'flowmap':
        return lambda model, x: flm.flowmap_loss(model, teacher, x, table, K, boundary_every, diagonal_share, weighted,
                                                 self_cond=self_conditioned(teacher))
    if kind == 'stage1':
        return lambda model, x: stages.stage1_loss(model, teacher, x, table, K, boundary_every, weighted)
    if kind == 'stage2':
        return lambda model, x: stages.stage2_loss(model, teacher, residual, x, table, K, boundary_every, weighted)
    if kind == 'ar':
        return lambda model, x: baselines.ar_loss(model, x, K)
    return lambda model, x: baselines.mdlm_loss(model, x, K)


def self_conditioned(net):
    """Whether an FLM or flow map (also inside a DDP or compile wrapper) reads self-conditioning (flm.py 3)."""
    net = getattr(net, 'module', net)
    return bool(getattr(getattr(getattr(net, '_orig_mod', net), 'cfg', None), 'self_cond', False))


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
            return stages.stage1_sample(teacher, net, table, (B, L, K), steps, x_known, known, generator=generator,
                                     device=device)
        # the jump of a flowmap or stage-2 flow map has the Euler step's form (flm.py 5): one jump per step
        return flm.euler_sample(net, table, (B, L, K), steps, x_known, known, generator=generator, device=device,
                                eta=eta, flow_map=kind in ('stage2', 'flowmap'), self_cond=self_conditioned(net))
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
    space, (f,) = flm.StateSpace.of(K, [net]) if kind == 'flm' else (None, (None,))  # d dims where K > d
    for tj in EVAL_T:
        if kind == 'mdlm':
            mask = torch.rand(x.shape, generator=generator, device=x.device) < tj
            ces.append(F.cross_entropy(net(torch.where(mask, K, x)).float()[mask], x[mask]))
            continue
        t = torch.full((x.size(0),), tj, device=x.device)
        g = flm.G(t, table)
        x_g = flm.interpolant(x, g, space.noise(*x.shape, generator, x.device), space)
        logits = f(x_g, t)
        if self_conditioned(net):  # the CE after reading its own estimate, as in its sampler's steps
            logits = f(x_g, t, sc=space.project(torch.softmax(logits.float(), -1)))
        ces.append(F.cross_entropy(logits.flatten(0, 1).float(), x.flatten()))
        if tj == 0.5:  # the reference sees what the network sees: x_g, or its image under E where K > d
            E = flm.input_embedding(net).float() if space.projected else None
            unigram = F.cross_entropy(flm.unigram_denoiser_logits(x_g.float(), g, log_pi, E).flatten(0, 1), x.flatten())
    return ces, unigram


def ce_figures(kind, net, batches, table, log_pi, generator, ctx):
    """train.py's evaluation of an FLM or a baseline: (figures, a line that tells them). Cross entropies
    on the fixed batches of each split (eval_ce), and the context gain: the reference's CE minus the
    model's at the middle point."""
    ev = {'eval_t': EVAL_T}
    for split, xs in batches.items():
        ce, ref = 0, 0
        for x in xs:
            with ctx:
                ce_x, ref_x = eval_ce(kind, net, x, table, log_pi, generator)
            ce, ref = ce + torch.stack(ce_x), ref + ref_x
        ce, ref = (ce / len(xs)).tolist(), ref.item() / len(xs)
        ev[split] = {'ce': sum(ce) / len(ce), 'ce_t': ce, 'gain': ref - ce[len(ce) // 2]}
    tr, va = ev['train'], ev['val']
    detail = f"ppl {math.exp(va['ce']):.3f}" if kind == 'ar' else ('t=' if kind == 'flm' else 'masked share=') + \
        ', '.join(f'{t}:{c:.3f}' for t, c in zip(EVAL_T, va['ce_t']))
    name = 'nll' if kind == 'ar' else 'ce'
    return ev, (f"train {name} {tr['ce']:.4f}, val {name} {va['ce']:.4f} ({detail}), "
                f"context gain {va['gain']:.4f} (train {tr['gain']:.4f})")


def log_eval(out_dir, iter_num, kind, ev):
    """out_dir/eval_log.jsonl (for tools/plot_eval.py): one line per evaluated iteration, also across resumes.
    Never fatal: a line that is no record is dropped, a log that cannot be written is skipped, with a warning."""
    path, kept, dropped = os.path.join(out_dir, 'eval_log.jsonl'), [], []
    try:
        with open(path, 'rb') as f:
            for n, line in enumerate(f, 1):
                try:
                    if json.loads(line)['iter'] < iter_num:
                        kept.append(line.rstrip(b'\n') + b'\n')
                except (ValueError, TypeError, KeyError, IndexError):
                    dropped.append(n)
    except FileNotFoundError:
        pass
    except OSError as e:
        dropped.append(f'all ({e.strerror or e})')
    if dropped:
        print(f"warning: {path}: dropped line(s) {', '.join(map(str, dropped))}, not eval records", file=sys.stderr)
    try:  # through a temporary file: a kill while writing leaves the old log
        with open(path + '.tmp', 'wb') as f:
            f.writelines(kept + [json.dumps({'iter': iter_num, 'kind': kind, **ev}).encode() + b'\n'])
        os.replace(path + '.tmp', path)
    except OSError as e:
        print(f"warning: cannot write {path} ({e.strerror or e}); the checkpoint is saved all the same", file=sys.stderr)


def read_index(path, keys):
    """A JSON dict of records, name -> a dict with the given keys (tools/sweep.py's samples/index.json).
    Never fatal: a file that is not such a dict is rebuilt (empty), an entry that is not such a record
    is dropped, with a warning; what was dropped is made again."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding='utf-8') as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print(f"warning: {path} is unreadable ({type(e).__name__}); rebuilt", file=sys.stderr)
        return {}
    if not isinstance(index, dict):
        print(f"warning: {path} is not a dict of records; rebuilt", file=sys.stderr)
        return {}
    bad = [k for k, v in index.items() if not (isinstance(v, dict) and set(keys) <= set(v))]
    if bad:
        print(f"warning: {path}: dropped the entries {', '.join(bad)}, not records", file=sys.stderr)
    return {k: v for k, v in index.items() if k not in bad}


def fit(net, loss_fn, batch, iters, lr, warmup, ema_decay, min_lr=1e-4, every=0, report=None):
    """The notebooks' training loop: train.py's step without its machinery (AdamW, the LR schedule,
    gradient clipping, the EMA with its decay warmed up). batch(): a batch of token ids; report(it, ema,
    losses) every `every` iterations and at the end. Returns the EMA network and the losses."""
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    losses = []
    for it in range(iters + 1):
        if report is not None and every and (it % every == 0 or it == iters):
            report(it, ema, losses)
        if it == iters:
            return ema, losses
        for group in opt.param_groups:
            group['lr'] = flm.lr_at(it, lr, min_lr, warmup, iters)
        loss = loss_fn(net, batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        flm.ema_update(ema, net, min(ema_decay, (1 + it) / (10 + it)))
        losses.append(loss.item())

# -----------------------------------------------------------------------------
# devices, saves, logging

def system(device, dtype):
    """(device, device_type, autocast context) from the --device and --dtype options ('auto': the
    best this machine has; bfloat16 autocast on a GPU that supports it)."""
    import torch
    from contextlib import nullcontext
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    device_type = device.split(':')[0]
    available = {'cpu': True, 'cuda': torch.cuda.is_available(), 'mps': torch.backends.mps.is_available()}
    if not available.get(device_type):
        die(f"--device={device}: not available here; this machine has {', '.join(k for k, v in available.items() if v)}")
    if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        die(f"--dtype must be one of auto, float32, bfloat16, float16; got '{dtype}'")
    if dtype == 'auto':
        dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    ptdtype = getattr(torch, dtype)
    ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type=device_type, dtype=ptdtype)
    return device, device_type, dtype, ctx


def writable(folder, flag):
    """Make the folder, and check now that files can be written there (not at the first save)."""
    try:
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, '.writable'), 'w').close()
        os.remove(os.path.join(folder, '.writable'))
    except OSError as e:
        die(f"{flag}={folder}: cannot write there: {e.strerror or e}")


def save_atomic(obj, path):
    """torch.save to a temporary file, synced, then renamed: a kill at any moment leaves either the
    old file or the new one, never half of one."""
    import torch
    try:
        with open(path + '.tmp', 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + '.tmp', path)
    except (OSError, RuntimeError) as e:
        die(f"cannot write {path}: {os.strerror(e.errno) if getattr(e, 'errno', None) else e}")


def wandb_init(project, name, config):
    """Weights & Biases, imported only when a run asks for it: starts a run and returns the module
    (wandb.log, wandb.finish)."""
    try:
        import wandb
    except ImportError:
        die("--wandb_log=True needs the wandb package: pip install wandb")
    wandb.init(project=project, name=name, config=config)
    return wandb


def scalars(figures, prefix=''):
    """The numbers of nested figures, flat, named by their path: {'val': {'ce': 1.2}} -> {'val/ce': 1.2}
    (lists and None are left out)."""
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update(scalars(value, f'{prefix}{key}/'))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = value
    return out


# -----------------------------------------------------------------------------
# Model FLOPs per training step, and the device's peak: the MFU that train.py logs and bench.py reports

# dense bfloat16 / float16 tensor-core peaks (no sparsity), matched in order against torch.cuda.get_device_name
PEAK_FLOPS = (('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H100', 989e12), ('H200', 989e12), ('H800', 989e12),
              ('A100', 312e12), ('A800', 312e12), ('L40S', 362e12), ('L4', 121e12), ('A10', 125e12), ('V100', 125e12))


def peak_flops(device, given=0.0):
    """given (--peak_flops) if > 0, else the peak of a GPU in PEAK_FLOPS by its name; 0.0 where unknown
    (a CPU, another GPU): then no MFU is shown."""
    if given > 0 or not str(device).startswith('cuda'):
        return given
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS if key in name), 0.0)


def forward_flops(net, L, projected=False):
    """FLOPs of one forward pass of a sequence of L tokens, as nanoGPT counts them: 2 per weight that acts
    on every token (the FLM's K x d input layer, the (L, K) output layer; not AR's or MDLM's embedding, a
    lookup, nor the per-sequence time conditioning) and 4 n_layer d L for attention (scores and values,
    causal attention counted in full). projected: the network reads its state's image (flm.py 7), so its
    input layer does not run. A backward pass costs twice the forward's."""
    per_sequence = ('adaLN', 'time_embed', 'loss_weight')
    N = sum(p.numel() for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)
            and not any(k in name for k in per_sequence) and not (projected and name == 'embed')
            for p in m.parameters())
    return 2 * N * L + 4 * net.cfg.n_layer * net.cfg.n_embd * L * L


def train_flops(kind, model, B, L, teacher=None, residual=None, diagonal_share=0.5, targets_from=None):
    """FLOPs of one micro-step of the kind's loss(model, x) and its backward, x (B, L): the trained
    network's forward and backward (3 forwards) and a distillation's no-grad passes that make its target
    (flm.py 5, 8): stage 1 the teacher and r_phi at x_s and at x_u, stage 2 the teacher and r_phi once,
    flowmap the teacher on its diagonal rows and the student (or targets_from) twice on its jump rows;
    self-conditioning adds the estimate on half the rows, and a flow map's teacher's on its diagonal rows.
    A projected state (flm.py 7, W the networks' widths side by side) adds its Gram M^T M and noise z @ R
    (forward, and the backward to M), and the targets' (B, L, K) x (K, W) projections onto M (stage 1: 2 per row,
    flowmap: 1 per jump row); nanoGPT's rule leaves out the rest (norms, softmaxes, elementwise updates)."""
    model = getattr(model, 'module', model)
    nets = [model] + {'stage1': [teacher], 'stage2': [teacher, residual],
                      'flowmap': [teacher] + ([targets_from] if targets_from is not None else [])}.get(kind, [])
    K = model.cfg.vocab_size
    projected = kind not in baselines.KINDS and flm.StateSpace(K, nets).projected
    fwd = lambda net: forward_flops(net, L, projected)
    total = 3 * B * fwd(model)
    n = round(B * diagonal_share)
    if kind == 'stage1':
        total += 2 * B * (fwd(teacher) + fwd(model))
    elif kind == 'stage2':
        total += B * (fwd(teacher) + fwd(residual))
    elif kind == 'flowmap':
        total += n * fwd(teacher) + 2 * (B - n) * fwd(targets_from if targets_from is not None else model)
    if self_conditioned(model):  # its estimate on every other row (flm.self_estimate); a flow map's teacher twice
        total += (B + 1) // 2 * fwd(model if kind == 'flm' or targets_from is None else targets_from)
        total += n * fwd(teacher) if kind == 'flowmap' else 0
    if projected:
        W = sum(net.cfg.n_embd for net in nets)
        rows = {'stage1': 2 * B, 'flowmap': B - n}.get(kind, 0)
        rows += ((B + 1) // 2 + (n if kind == 'flowmap' else 0)) if self_conditioned(model) else 0
        total += 4 * K * W * W + 4 * B * L * W * W + 2 * rows * L * K * W
    return total

# -----------------------------------------------------------------------------
# The optimizer step with its non-finite guard, on the device: nothing is read back to the host, so on a
# GPU the step does not wait for the device; train.py reads the guard at its log lines (guard_failed)


def new_guard(device):
    """The guard's state: whether a step failed (sticky), and the first failed step's iteration and loss."""
    return {'failed': torch.zeros((), dtype=torch.bool, device=device),
            'iter': torch.zeros((), dtype=torch.long, device=device),
            'loss': torch.zeros((), device=device)}


def train_step(model, loss_fn, next_batch, optimizer, scaler, grad_clip, accumulation, ctx, guard, iter_num,
               ddp=False):
    """One optimizer step on `accumulation` micro-batches next_batch() (each loss / accumulation; under
    DDP the gradients are averaged over the processes on the last micro-step). Returns the last
    micro-batch's loss (a device tensor).
    The guard: where the loss or the gradient is not finite (float16: a gradient that overflows is its
    scaler's, which skips that step, as it should), or the weights after the update are not (a finite
    gradient times a huge learning rate),
    the update is undone by an on-device select from a copy taken before it, and guard['failed'] is set;
    once set, every later step is undone too (the optimizer's moments may hold NaN), until the run reads
    the flag and stops. So no non-finite update ever reaches the weights, and nothing waits for the host."""
    total = 0.0  # the iteration's loss, on the device
    for micro_step in range(accumulation):
        if ddp:  # sync gradients on the last micro step only
            model.require_backward_grad_sync = micro_step == accumulation - 1
        x = next_batch()
        with ctx:
            loss = loss_fn(model, x) / accumulation
        scaler.scale(loss).backward()
        total = total + loss.detach().float()
    params = [p for p in model.parameters() if p.requires_grad]
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    before = [p.detach().clone() for p in params]
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        bad = ~total.isfinite() | ~torch.stack(torch._foreach_norm(params, math.inf)).isfinite().all()  # max |w|
        if not scaler.is_enabled():  # (float16: a scaled gradient's overflow is the scaler's, a lost step)
            bad = bad | ~norm.isfinite()
        guard['iter'] = torch.where(bad & ~guard['failed'], iter_num, guard['iter'])
        guard['loss'] = torch.where(bad & ~guard['failed'], total, guard['loss'])
        guard['failed'] = guard['failed'] | bad
        for p, b in zip(params, before):
            p.copy_(torch.where(guard['failed'], b, p))
    return loss


def guard_failed(guard, saved_at, ckpt_path, ddp=False):
    """The one-line error for a failed guard (a host sync: at log lines and before saving only). Under DDP
    every rank stops if any failed (a loss that is not finite on one rank only, under float16's scaler)."""
    failed = guard['failed'].int()
    if ddp:
        torch.distributed.all_reduce(failed, op=torch.distributed.ReduceOp.MAX)
    if failed.item():
        die(f"iteration {guard['iter'].item()}: the loss, gradient or weights are not finite (loss "
            f"{guard['loss'].item():.4g}); that update was undone and the run stopped, the checkpoint of "
            f"iteration {saved_at} is untouched ({ckpt_path}); lower --learning_rate")
