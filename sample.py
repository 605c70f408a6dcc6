"""
Sample from a checkpoint of any kind train.py writes: an FLM with flm.euler_sample, 64 Euler steps
(by default with fresh noise, --eta=0.6; --eta=0 is the paper's deterministic sampler), its flow map
with the same sampler in one step (flow_map=True), MDLM in 128 steps, AR left to right (tools/runs.py).

$ python sample.py --steps=8 --num_samples=4 --start="ROMEO:"   # out-shakespeare-char/ckpt.pt
$ python sample.py --out_dir=out-shakespeare-char-fm           # one step
$ python sample.py --ckpt=path/to/ckpt.pt --start=FILE:prompt.txt --out=samples.json
$ python sample.py --init_from=FMLM-B-OWT                # the paper's released checkpoints (tools/pretrained.py)

A released checkpoint (--init_from) samples the paper's way unless told otherwise: its
deterministic sampler (--eta=0) with the steps of the paper's evaluation, 1024 Euler steps for an
FLM and one jump for an FMLM.

--out writes the texts, their token ids, the settings (with the tokenizer that made the ids) and
the seconds per sample (python -m tools.judge reads it). The texts are decoded as the paper's code
decodes its samples, which is what its Gen PPL reads. It writes a new file or replaces a samples
file; anything else only with --force, and never the checkpoint it reads.
"""

import json
import os
import signal
import sys
import time


def _quiet_stop(signum, frame):
    """Ctrl-C, at any moment from here on (the imports included): one line, no traceback."""
    print("stopped by Ctrl-C; no samples file written", file=sys.stderr)
    sys.exit(128 + signum)


signal.signal(signal.SIGINT, _quiet_stop)

from configurator import configure, die  # noqa: E402

# -----------------------------------------------------------------------------
out_dir = 'out-shakespeare-char'  # reads out_dir/ckpt.pt ...
ckpt = ''                 # ... or this path
init_from = ''            # ... or a released checkpoint of the paper: FLM-B-OWT, FMLM-B-OWT, FLM-B-LM1B,
                          # FMLM-B-LM1B, owner/name on the hub, or a folder in that layout
steps = 0                 # sampler steps; 0: the kind's default (64 FLM, 1 flow map, 128 MDLM; a release: 1024 FLM)
eta = -1.0                # FLM: share of fresh noise after each step (flm.py 4); -1: 0.6 for an FLM, else 0
                          # (a release: 0, the paper's sampler)
num_samples = 8
batch_size = 16           # samples generated at once
start = ''                # prompt text at the start of every sample, or FILE:path
seed = 1337
out = ''                  # write the samples and settings as JSON here (a new file, or a samples file)
force = False             # let --out replace a file that is not a samples file
ema = True                # sample with the EMA weights
stats = True              # valid-word fraction and unigram entropy, beside the training data's
device = 'auto'
dtype = 'auto'
# -----------------------------------------------------------------------------
config = configure({k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))},
                   sys.argv[1:])
globals().update(config)
MAX_STEPS = 100_000  # 100 times the sweep's largest count: a larger one is a typo, not a run to wait for
if num_samples <= 0 or batch_size <= 0 or not 0 <= steps <= MAX_STEPS:
    die(f"--num_samples and --batch_size must be > 0 and --steps in 0..{MAX_STEPS} (0: the kind's default); "
        f"got {num_samples}, {batch_size}, {steps}")
if not (0 <= eta <= 1 or eta == -1):
    die(f"--eta must be in [0, 1] (or -1: the checkpoint kind's default), got {eta}")


def is_samples_file(path):
    """Whether path holds what --out writes (a JSON object with samples and ids): a file it may replace."""
    try:
        with open(path, 'rb') as f:
            if f.read(1) != b'{':  # a checkpoint, a data file: not read on
                return False
            f.seek(0)
            found = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and {'samples', 'ids'} <= set(found)


if os.path.isfile(init_from):  # never a hub name
    die(f"--init_from={init_from} is a file; --init_from takes a released checkpoint (a name or its folder), "
        f"and a checkpoint of train.py is read with --ckpt={init_from}")
source = ckpt or os.path.join(out_dir, 'ckpt.pt')
read = [os.path.join(init_from, f) for f in ('config.json', 'model.safetensors')] if init_from else [source]
if out:  # where the samples go is checked now, before the sampling
    if os.path.isdir(out):
        die(f"--out={out} is a folder; name a file in it, e.g. --out={os.path.join(out, 'samples.json')}")
    folder = os.path.dirname(out) or '.'
    if (not os.path.exists(out) or os.path.isfile(out)) and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        die(f"--out={out}: no writable folder {folder}")  # (a new file, or a temporary one beside the old)
    if os.path.exists(out) and any(os.path.exists(f) and os.path.samefile(out, f) for f in read):
        die(f"--out={out} is the checkpoint being sampled; write the samples to another file")
    if os.path.exists(out) and not force and not is_samples_file(out):
        die(f"--out={out} exists and is not a samples file; name a new file, or replace it with --force=True")
if start.startswith('FILE:'):
    try:
        with open(start[5:], 'r', encoding='utf-8') as f:
            start = f.read()
    except (OSError, UnicodeDecodeError) as e:
        die(f"cannot read the prompt file {start[5:]} as UTF-8 text: {e}")

# torch only now: a refused command is refused at once, not after seconds of imports
import torch  # noqa: E402

import dataset as data  # noqa: E402
import flm  # noqa: E402
from tools import runs, textstats  # noqa: E402
from tools.runs import system  # noqa: E402

device, device_type, dtype, ctx = system(device, dtype)

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
PAPER_STEPS = {'flm': 1024, 'stage2': 1}  # a release's default: the paper's evaluation (its Gen PPL table)
steps = L if kind == 'ar' else steps or (PAPER_STEPS[kind] if init_from else runs.DEFAULT_STEPS[kind])
if kind in ('ar', 'mdlm') and eta != -1:
    die(f"--eta is the flow samplers' fresh noise; the {kind} sampler has none")
eta = eta if eta >= 0 else (0.6 if kind == 'flm' and not init_from else 0.0)
if kind == 'stage1' and eta > 0:
    die("--eta: the stage-1 sampler has no fresh-noise option (its state is not a denoiser's estimate); use --eta=0")
prompt = encode(start)
if len(prompt) > L:
    die(f"the prompt is {len(prompt)} tokens long, longer than the block ({L})")

# -----------------------------------------------------------------------------
table = flm.g_table(K, device)
if kind in ('flm', 'flowmap', 'stage2'):  # a flow map's jump has the Euler step's form (flm.py 5)
    def sample(B, L, steps, x_known, known, generator, device, eta):
        return flm.euler_sample(model, table, (B, L, K), steps, x_known, known, generator, device, eta,
                                flow_map=kind != 'flm')
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
for s in samples:
    print(s)
    print('---------------')
name = f"{kind}, {steps} steps" + (f", eta {eta:g}" if kind not in ('ar', 'mdlm') else '')
print(f"{seconds:.3f} s per sample ({name}, {num_samples} samples, batch {batch_size}, {device})")

result = {'samples': samples, 'ids': samples_ids, 'seconds_per_sample': seconds,
          'settings': {**config, 'steps': steps, 'eta': eta, 'start': start, 'ckpt': source, 'kind': kind,
                       'tokenizer': tokenizer}}
if stats and data_dir and os.path.isfile(os.path.join(data_dir, 'train.bin')):
    words, reference = textstats.data_stats(data_dir, decode, L)
    figures = textstats.text_figures(samples, words)
    print(textstats.report(name, figures, reference))
    result['stats'], result['reference'] = figures, reference
if out:  # a regular file through a temporary one, renamed: a failed write leaves what was there
    path = out if os.path.exists(out) and not os.path.isfile(out) else out + '.tmp'  # (a device with --force)
    try:
        try:
            with open(path, 'w', encoding='utf-8') as f:
                json.dump(result, f, indent=1)
            if path != out:
                os.replace(path, out)
        finally:
            if path != out and os.path.exists(path):
                os.remove(path)
    except OSError as e:
        die(f"cannot write {out}: {e.strerror or e}")
    print(f"wrote {out}")
