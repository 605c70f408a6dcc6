"""Sample from a checkpoint of any kind train.py writes: an FLM with flm.euler_sample, 64 Euler steps
(by default with fresh noise, --eta=0.6; --eta=0 is the paper's deterministic sampler), its flow map
with the same sampler in one step (flow_map=True), MDLM in 128 steps, AR left to right (tools/runs.py).
A released checkpoint of the paper (--init_from, tools/pretrained.py) samples the paper's way: --eta=0,
1024 Euler steps for an FLM, one jump for an FMLM. --out (read by python -m tools.judge) and --animate
write new files, or replace a samples file and a GIF; anything else only with --force.

$ python sample.py --steps=8 --num_samples=4 --start="ROMEO:"   # out-shakespeare-char/ckpt.pt
$ python sample.py --out_dir=out-shakespeare-char-fm --out=fm.json --animate=fm.gif   # one step, and a GIF
$ python sample.py --init_from=FMLM-B-OWT --start=FILE:prompt.txt
"""

import os
import sys
import time

from configurator import configure, die
from tools import files  # no torch: a refused command answers at once

files.quiet_ctrl_c("no samples file written")

# -----------------------------------------------------------------------------
out_dir = 'out-shakespeare-char'  # reads out_dir/ckpt.pt ...
ckpt = ''                 # ... or this path
init_from = ''            # ... or a release of the paper: FLM-B-OWT, FMLM-B-OWT, FLM-B-LM1B, FMLM-B-LM1B, owner/name, a folder
steps = 0                 # sampler steps; 0: the kind's default (64 FLM, 1 flow map, 128 MDLM; a release: 1024 FLM)
eta = -1.0                # FLM: share of fresh noise after each step (flm.py 4); -1: 0.6 for an FLM, else 0 (a release: 0)
num_samples = 8
batch_size = 16           # samples generated at once
start = ''                # prompt text at the start of every sample, or FILE:path
seed = 1337
out = ''                  # write the samples and settings as JSON here (a new file, or a samples file)
force = False             # let --out replace a file that is not a samples file
ema = True                # sample with the EMA weights
stats = True              # valid words, unigram entropy and diversity, beside real text's (tools/textstats.py)
animate = ''              # also write the sampling of one sample (batch 1, this seed) as a GIF here (tools/animate.py)
device = 'auto'
dtype = 'auto'
# -----------------------------------------------------------------------------
config = configure({k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))},
                   sys.argv[1:])
globals().update(config)
if num_samples <= 0 or batch_size <= 0 or not 0 <= steps <= 100_000:  # 100x the sweep's largest: a typo
    die(f"--num_samples and --batch_size must be > 0 and --steps in 0..100000 (0: the kind's default); "
        f"got {num_samples}, {batch_size}, {steps}")
if not (0 <= eta <= 1 or eta == -1):
    die(f"--eta must be in [0, 1] (or -1: the checkpoint kind's default), got {eta}")
if os.path.isfile(init_from):  # never a hub name
    die(f"--init_from={init_from} is a file; --init_from takes a released checkpoint (a name or its folder), "
        f"and a checkpoint of train.py is read with --ckpt={init_from}")
source = ckpt or os.path.join(out_dir, 'ckpt.pt')
read = [os.path.join(init_from, f) for f in ('config.json', 'model.safetensors')] if init_from else [source]
files.check_outputs(out, animate, read, force)  # where the samples and the animation go, before the sampling
start = files.read_prompt(start)

# torch only now, after the checks
import torch  # noqa: E402

import dataset as data  # noqa: E402
import flm  # noqa: E402
from tools import animation, runs, textstats  # noqa: E402

device, device_type, dtype, ctx = runs.system(device, dtype)

# -----------------------------------------------------------------------------
data_dir = ''
if init_from:
    from tools import pretrained
    released = pretrained.load_pretrained(init_from, device)
    kind, model, teacher, source = released.kind, released.model, None, released.source
    encode, decode = released.encode, released.decode
    tokenizer = released.tokenizer or 'ids'  # no known tokenizer: the texts are the ids
else:
    kind, model, teacher, meta = runs.for_sampling(source, device, 'ema' if ema else 'model')
    data_dir, (encode, decode) = data.folder(meta['dataset']), data.codec(meta)
    tokenizer = 'characters' if 'itos' in meta else meta.get('tokenizer', 'gpt2')
L, K = model.cfg.block_size, model.cfg.vocab_size
steps = L if kind == 'ar' else steps or (runs.PAPER_STEPS if init_from else runs.DEFAULT_STEPS)[kind]
eta = runs.sampler_eta(kind, eta, released=bool(init_from))
prompt = encode(start)
if len(prompt) > L:
    die(f"the prompt is {len(prompt)} tokens long, longer than the block ({L})")
if animate and kind not in animation.KINDS:
    die(f"--animate shows the flow samplers ({', '.join(animation.KINDS)}), not a '{kind}' checkpoint")

# -----------------------------------------------------------------------------
table = flm.g_table(K, device)
if kind in ('flm', 'flowmap', 'stage2'):  # a flow map's jump has the Euler step's form (flm.py 5)
    def sample(B, L, steps, x_known, known, generator, device, eta):
        return flm.euler_sample(model, table, (B, L, K), steps, x_known, known, generator, device, eta,
                                flow_map=kind != 'flm', self_cond=model.cfg.self_cond)
else:  # stage 1 (stages.py) and the baselines
    sample = runs.sampler(kind, model, table, teacher)
generator = torch.Generator(device=device).manual_seed(seed)
samples_ids = []
t0 = time.time()
for i in range(0, num_samples, batch_size):
    B = min(batch_size, num_samples - i)
    x_known, known = runs.prompt_positions(prompt, B, L, device)
    with ctx:
        samples_ids += sample(B, L, steps, x_known, known, generator=generator, device=device, eta=eta).tolist()
if device_type == 'cuda':
    torch.cuda.synchronize()
seconds = (time.time() - t0) / num_samples
samples = [decode(ids) for ids in samples_ids]
print('\n---------------\n'.join(samples) + '\n---------------')
name = f"{kind}, {steps} steps" + (f", eta {eta:g}" if kind not in ('ar', 'mdlm') else '')
print(f"{seconds:.3f} s per sample ({name}, {num_samples} samples, batch {batch_size}, {device})")

result = {'samples': samples, 'ids': samples_ids, 'seconds_per_sample': seconds,
          'settings': {**config, 'steps': steps, 'eta': eta, 'start': start, 'ckpt': source, 'kind': kind,
                       'tokenizer': tokenizer}}
if stats and data_dir and os.path.isfile(os.path.join(data_dir, 'train.bin')):  # beside real text's
    result['stats'], result['reference'] = textstats.figures_and_reference(data_dir, decode, L, samples, samples_ids)
    print(textstats.report(name, result['stats'], result['reference']))
if out:
    files.write_json(out, result)
if animate:  # one sample's path, drawn from its steps' D (flm.euler_sample's on_step)
    animation.animate(animate, kind, model, source, table, steps, eta, seed, device, decode,
                      runs.prompt_positions(prompt, 1, L, device) if prompt else None)
