"""
Train a flow-based language model (FLM) with flm.flm_loss, distil one into a flow map (FMLM) with
flm.flowmap_loss (or the two stages of stages.py), or train a baseline (AR or MDLM) with the same data,
optimizer and budget. The kinds: tools/runs.py.

$ python train.py                                    # the tiny Shakespeare char FLM, on one CPU or GPU
$ python train.py config/distill_shakespeare_char.py --teacher=out-shakespeare-char/ckpt.pt   # its flow map
$ python train.py --kind=ar --out_dir=out-shakespeare-char-ar          # a baseline, or the judge
$ torchrun --standalone --nproc_per_node=4 train.py config/train_owt.py  # DDP on 4 GPUs of one node
$ python train.py --init_from=resume --out_dir=out-shakespeare-char    # continue exactly, same options
$ python train.py config/distill_flowmap_owt.py --teacher=FLM-B-OWT     # the paper's released FLM as teacher
$ python train.py config/train_owt.py --init_from=FLM-B-OWT              # ... or as the start of an FLM run
"""

import copy
import os
import signal
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import dataset as data
import flm
from configurator import check, die, overrides, resume_config
from tools import pretrained, runs, textstats
from tools.runs import save_atomic, scalars, system, wandb_init, writable

# -----------------------------------------------------------------------------
# default config values: the tiny Shakespeare char FLM, ~16 minutes on a 2-core CPU
# I/O
out_dir = 'out-shakespeare-char'
eval_interval = 300
log_interval = 10
eval_iters = 4            # fixed batches per split at each eval
eval_sample_steps = 32    # sampler steps of the sample printed at each eval
init_from = 'scratch'     # 'scratch', 'resume', or a released FLM to continue (FLM-B-OWT, FLM-B-LM1B, a folder)
eval_only = False         # evaluate once (e.g. a checkpoint, with --init_from=resume), print, save nothing, exit
wandb_log = False         # also log to Weights & Biases (pip install wandb), from the master process
wandb_project = 'flm'
wandb_run_name = ''       # '' : out_dir's name
# data
dataset = 'shakespeare_char'  # a folder under data/, or a path to one
gradient_accumulation_steps = 1
batch_size = 32
block_size = 128
# what to train: 'flm', a flow map distilled from one ('stage1', 'stage2', 'flowmap'), or a baseline ('ar', 'mdlm')
kind = 'flm'
n_layer = 4
n_head = 4
n_embd = 128
n_cond = 128
dropout = 0.0             # measured: 0.1 slowed the CPU step by 25% and did not help in 20 minutes
# The paper's DiT (flm.FLMConfig's switches): the OWT and LM1B presets in config/ turn all four on. These defaults
# are this project's measured choices for the small Shakespeare runs (README "Deviations from the paper").
ln_scale = False          # LayerNorms with a learnable scale
attn_softcap = 0.0        # > 0: attention logits soft-capped at this value (the paper: 50)
time_scale = 1000.0       # the time embedding reads time_scale * t (the paper: 1, raw t)
embed_dropout = True      # dropout also on the input embedding (the paper: False, in the blocks only)
self_cond = False         # not in the paper: the FLM also reads its previous D (flm.py 3, method.md 9)
# AdamW optimizer, warmup then (optionally) cosine decay
learning_rate = 2e-3
max_iters = 3600
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
warmup_iters = 100
decay_lr = True
lr_decay_iters = 3600
min_lr = 1e-4
ema_decay = 0.999         # the paper's 0.9999 suits 1M steps; ~1/(1 - decay) steps are averaged
# flow-map distillation (method.md 5, and 8 for the two stages); presets in config/distill_*.py
teacher = ''              # stage 1 and flowmap: the FLM checkpoint to distil
stage1 = ''               # stage 2: the stage-1 checkpoint (it carries the FLM teacher)
boundary_every = 0        # the whole jump s=0, t=1 is drawn once in boundary_every pairs; 0: the kind's (64, 128, 64)
loss_weighting = False    # the learnable loss weighting (method.md 3); if not given: on for stage 1 only
diagonal_share = 0.5      # flowmap: the share of diagonal samples, s = t, on the teacher's denoiser (method.md 5)
ema_targets = False       # flowmap: the jumps' targets from the EMA weights, not the online ones (method.md 5's variant)
eval_samples = 32         # distillation evals: fixed-noise samples per sampler
eval_ref_steps = 64       # ... compared with the teacher's Euler sampler at this many steps
# system
device = 'auto'           # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'            # 'auto', 'float32', 'bfloat16', 'float16'
compile = False
peak_flops = 0.0          # the device's peak FLOP/s for the logged MFU; 0: a known GPU's (runs.PEAK_FLOPS), else no MFU
backend = 'auto'          # DDP: 'nccl' on GPU, 'gloo' on CPU
seed = 1337
# -----------------------------------------------------------------------------
defaults = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))}
given = overrides(defaults, sys.argv[1:])
config = {**defaults, **given}
ckpt_path = os.path.join(config['out_dir'], 'ckpt.pt')
checkpoint = None
if config['init_from'] == 'resume':  # the run's own options; the command line may change a few
    checkpoint = runs.load_checkpoint(ckpt_path, '--init_from=resume', resume=True)
    config = resume_config(defaults, given, checkpoint['config'], {
        'max_iters', 'learning_rate', 'warmup_iters', 'decay_lr', 'lr_decay_iters', 'min_lr', 'grad_clip',
        'eval_interval', 'log_interval', 'eval_iters', 'eval_sample_steps', 'eval_samples', 'eval_ref_steps',
        'device', 'dtype', 'compile', 'peak_flops', 'backend', 'wandb_log', 'wandb_project', 'wandb_run_name', 'eval_only'})
elif 'loss_weighting' not in given:  # the kind's default, recorded in the run's config
    config['loss_weighting'] = config['kind'] in runs.WEIGHTED
globals().update(config)
check(config, runs.option_rules(config))  # a one-line error for the first invalid option
runs.check_sources(kind, teacher, stage1)
distilling = kind in runs.FLOW_MAPS

# -----------------------------------------------------------------------------
# devices, DDP
device, device_type, dtype, ctx = system(device, dtype)
ddp = int(os.environ.get('RANK', -1)) != -1
if ddp:
    dist.init_process_group(backend=('nccl' if device_type == 'cuda' else 'gloo') if backend == 'auto' else backend)
    rank, local_rank, world_size = dist.get_rank(), int(os.environ['LOCAL_RANK']), dist.get_world_size()
    if device_type == 'cuda':
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    if gradient_accumulation_steps % world_size:
        die(f"gradient_accumulation_steps ({gradient_accumulation_steps}) must be divisible by the number of processes ({world_size})")
    gradient_accumulation_steps //= world_size
else:
    rank, world_size = 0, 1
master_process = rank == 0
torch.manual_seed(seed + rank)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
tokens_per_iter = gradient_accumulation_steps * world_size * batch_size * block_size
if master_process:
    print(f"tokens per iteration: {tokens_per_iter:,} on {world_size} process(es), device {device}, dtype {dtype}")

# -----------------------------------------------------------------------------
# data: train.bin / val.bin of uint16 token ids; meta.pkl: a char vocabulary or a tokenizer, packed blocks (dataset.py)
data_dir = data.folder(dataset)
if master_process:
    data.prepare_if_missing(dataset)
if ddp:
    dist.barrier()
data.prepare_if_missing(dataset)  # every rank: a one-line error if it is still missing
meta = data.read_meta(data_dir)
vocab_size = meta['vocab_size']
counts = data.check_splits(data_dir, vocab_size, block_size, meta.get('block_size', 0))
# unigram frequencies pi (add-one smoothed: no log pi is -inf), for the context gain's reference
log_pi = torch.tensor(np.log((counts + 1) / (counts + 1).sum()), dtype=torch.float32, device=device)
encode, decode = data.codec(meta)


def get_batch(split, generator=None):
    return data.get_batch(data_dir, split, batch_size, block_size, device, generator, meta.get('block_size', 0))

# -----------------------------------------------------------------------------
# model, its loss and sampler (runs.py), optimizer, EMA
# distillation's frozen networks (EMA weights): the FLM teacher, and for stage 2 stage 1's r_phi,
# both from the stage-1 checkpoint, which carries its teacher (a resumed stage 1 reads it there)
teacher_net, residual_net, carried = runs.frozen_networks(kind, teacher, stage1, checkpoint, vocab_size, block_size,
                                                           device)
model_args = dict(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                  n_embd=n_embd, n_cond=n_cond, dropout=dropout, ln_scale=ln_scale, attn_softcap=attn_softcap,
                  time_scale=time_scale, embed_dropout=embed_dropout, self_cond=self_cond)
released = None  # --init_from=<a released FLM>: its network and weights (the model options are the release's)
if checkpoint is not None:
    runs.require_kind(checkpoint, ckpt_path, '--init_from=resume', kind)
    model_args, iter_num = checkpoint['model_args'], checkpoint['iter_num']
else:
    iter_num = 0
    if init_from != 'scratch':
        released = pretrained.release_as_checkpoint(init_from, '--init_from', vocab_size, block_size, device)
        model_args = runs.options_of(init_from, released['model_args'], given, master_process and 'note')
model = (runs.student(kind, teacher_net, loss_weighting) if distilling
         else runs.network(kind, model_args).to(device))
model_args = runs.options_of(teacher or stage1, asdict(model.cfg), given, distilling and 'error')
if checkpoint is not None:
    runs.load_weights(model, checkpoint['model'], ckpt_path)
elif released is not None:
    runs.load_weights(model, released['ema'], init_from)
if master_process:
    print(f"{kind} network with {model.num_params() / 1e6:.2f}M parameters"
          + (f", distilled from {teacher or stage1}" if distilling else "")
          + (f", continued from {released['source']}" if released else ""))
table = flm.g_table(vocab_size, device)  # G(t), on the device: no host sync in the step

optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(beta1, beta2),
                              weight_decay=weight_decay, fused=device_type == 'cuda')
if checkpoint is not None:
    runs.load_weights(optimizer, checkpoint['optimizer'], ckpt_path)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))

raw_model = model
if compile:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
ema = copy.deepcopy(raw_model).eval().requires_grad_(False)  # after DDP: every rank starts from rank 0's weights
if checkpoint is not None:
    runs.load_weights(ema, checkpoint['ema'], ckpt_path)
    runs.restore_rng(checkpoint['rng'], rank, world_size, device_type, master_process)
checkpoint = released = None  # free memory
# the loss of each kind: the FLM's CE (flm.py 3), its flow map's KL semigroup loss (flm.py 5), or another's
if kind == 'flm':
    loss_fn = lambda model, x: flm.flm_loss(model, x, table, vocab_size, self_cond=raw_model.cfg.self_cond)
elif kind == 'flowmap':  # a self-conditioned teacher makes a self-conditioned student
    loss_fn = lambda model, x: flm.flowmap_loss(model, teacher_net, x, table, vocab_size, boundary_every or 64,
                                                diagonal_share, loss_weighting, targets_from=ema if ema_targets else None,
                                                self_cond=raw_model.cfg.self_cond)
else:  # the two stages (stages.py) and the baselines (tools/baselines.py)
    loss_fn = runs.loss_fn(kind, vocab_size, table, teacher_net, residual_net, boundary_every, loss_weighting)
# the model FLOPs of one iteration of this process, for the MFU of the log line
flops_per_iter = gradient_accumulation_steps * runs.train_flops(kind, raw_model, batch_size, block_size, teacher_net,
                                                                residual_net, diagonal_share, ema if ema_targets else None)
peak = runs.peak_flops(device, peak_flops)
guard = runs.new_guard(device)  # the non-finite guard of the training step, on the device (runs.train_step)


def get_lr(it):
    return flm.lr_at(it, learning_rate, min_lr, warmup_iters, lr_decay_iters, decay_lr)

# -----------------------------------------------------------------------------
# evaluation, on fixed batches with fixed noise: the same figures at every eval
_gen = torch.Generator().manual_seed(seed)
eval_batches = {split: [get_batch(split, _gen) for _ in range(eval_iters)] for split in ('train', 'val')}


@torch.no_grad()
def generate(net, net_kind, steps, n):
    """n samples (ids, n x L) of the kind's sampler (deterministic), from the same noise at every call."""
    gen = torch.Generator(device=device).manual_seed(seed)
    with ctx:
        return runs.sampler(net_kind, net, table, teacher_net)(n, block_size, steps, generator=gen, device=device)


if distilling and master_process:  # the teacher's side is the same at every eval: once
    words, reference = textstats.data_stats(data_dir, decode, block_size)
    teacher_ids = generate(teacher_net, 'flm', eval_ref_steps, eval_samples)
    sample_figures = lambda ids: textstats.sample_figures(ids, teacher_ids, decode, words)
    teacher_figures = sample_figures(teacher_ids)


def evaluate():
    """Evaluate the EMA network, print the figures and a sample, and return the figures. FLM and baselines:
    cross entropies on the fixed batches (runs.eval_ce) and the context gain; flow maps: their 1- and
    4-step samples against the teacher's."""
    if distilling:
        samples = {s: generate(ema, kind, s, eval_samples) for s in (1, 4)}
        ev = {'teacher': teacher_figures, 'reference': reference,
              **{f'{s} step': sample_figures(ids) for s, ids in samples.items()}}
        line = (" | ".join(f"{name}: {textstats.figures_text(ev[name])}" for name in ('1 step', '4 step'))
                + f" | FLM at {eval_ref_steps} steps: {textstats.figures_text(teacher_figures)}")
        ids, how = samples[1][0], '1 step'
    else:
        ev, line = runs.ce_figures(kind, ema, eval_batches, table, log_pi, torch.Generator(device=device).manual_seed(seed), ctx)
        ids, how = generate(ema, kind, eval_sample_steps, 1)[0], 'left to right' if kind == 'ar' else f'{eval_sample_steps} steps'
    print(f"eval {iter_num}: {line}")
    print(f"sample ({how}): {decode(ids.tolist())[:200]!r}")
    return ev


def save_checkpoint():
    """Every rank's RNG state (a resumed run continues exactly); rank 0 writes, atomically."""
    state = {'cpu': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None}
    weight_sum = sum(p.double().abs().sum() for p in raw_model.parameters()).item()  # ranks agree (tested)
    gathered = [(state, weight_sum)] * world_size
    if ddp:
        dist.all_gather_object(gathered, (state, weight_sum))
    if not master_process:
        return
    if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
        die(f"iteration {iter_num}: the weights are not finite; nothing saved ({ckpt_path} is untouched)")
    ckpt = {'kind': kind, 'model': raw_model.state_dict(), 'ema': ema.state_dict(),
            'optimizer': optimizer.state_dict(), 'model_args': model_args, 'iter_num': iter_num,
            'config': config, 'meta': meta, 'rng': [s for s, _ in gathered],
            'weight_fingerprints': [w for _, w in gathered], **carried}
    save_atomic(ckpt, ckpt_path)  # an interrupted save leaves the old file
    print(f"saved checkpoint to {ckpt_path}")


# -----------------------------------------------------------------------------
# training loop
stop_signal = 0


def on_signal(signum, frame):
    """Ctrl-C or SIGTERM: finish the iteration, save, stop. A second one stops at once."""
    global stop_signal
    stop_signal = signum
    signal.signal(signum, signal.SIG_DFL)


def stop_requested():
    """The signal that asks to stop; under DDP any rank's, read at log lines only: the all-reduce waits for
    the device."""
    if not ddp:
        return stop_signal
    if iter_num % log_interval:
        return 0
    flag = torch.tensor([stop_signal], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same iteration
    return int(flag.item())


wandb = None  # the master process logs to Weights & Biases if asked to: wandb.log(figures, step=iter_num)
if master_process:
    writable(out_dir, '--out_dir')  # an unwritable out_dir is found now, not at the first save
    if wandb_log:
        wandb = wandb_init(wandb_project, wandb_run_name or os.path.basename(os.path.abspath(out_dir)), config)
if eval_only:
    if master_process:
        evaluate()
    if ddp:
        dist.destroy_process_group()
    sys.exit(0)
signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)
saved_at = iter_num if init_from == 'resume' else -1  # the iteration of the checkpoint on disk
t0 = time.time()
while True:
    if (iter_num % eval_interval == 0 or iter_num == max_iters) and saved_at != iter_num:
        runs.guard_failed(guard, saved_at, ckpt_path, ddp)  # a failed step saves nothing
        if master_process:
            ev = evaluate()
            runs.log_eval(out_dir, iter_num, kind, ev)
            if wandb:
                wandb.log({'iter': iter_num, 'lr': get_lr(iter_num), **scalars(ev)}, step=iter_num)
        save_checkpoint()
        saved_at = iter_num
        t0 = time.time()  # do not count the eval in the next step's time
    if iter_num >= max_iters:
        break
    signum = stop_requested()
    if signum:
        runs.guard_failed(guard, saved_at, ckpt_path, ddp)
        if saved_at != iter_num:
            save_checkpoint()  # at an iteration boundary: it resumes like any other checkpoint
        if master_process:
            print(f"stopped by signal {signum} at iter {iter_num}; resume with --init_from=resume")
        if ddp:
            dist.destroy_process_group()
        sys.exit(128 + signum)

    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr
    loss = runs.train_step(model, loss_fn, lambda: get_batch('train'), optimizer, scaler, grad_clip,
                           gradient_accumulation_steps, ctx, guard, iter_num, ddp)
    flm.ema_update(ema, raw_model, min(ema_decay, (1 + iter_num) / (10 + iter_num)))
    iter_num += 1

    if iter_num % log_interval == 0:
        runs.guard_failed(guard, saved_at, ckpt_path, ddp)  # a sync: only every log_interval, on every rank
    if iter_num % log_interval == 0 and master_process:
        dt = time.time() - t0
        lossf = loss.item() * gradient_accumulation_steps
        mfu = flops_per_iter * log_interval / dt / peak if peak else None
        print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000 / log_interval:.1f} ms/iter, "
              f"{tokens_per_iter * log_interval / dt:,.0f} tokens/s" + (f", MFU {100 * mfu:.2f}%" if peak else ""))
        if wandb:
            wandb.log({'iter': iter_num, 'loss': lossf, 'lr': lr, 'tokens/s': tokens_per_iter * log_interval / dt,
                       **({'mfu': mfu} if peak else {})}, step=iter_num)
        t0 = time.time()
if wandb:
    wandb.finish()
if ddp:
    dist.barrier()  # no rank leaves while another is still in a collective
    dist.destroy_process_group()
