"""
The first run on a GPU, in one command and one JSON: does this repository's GPU path work there, and how
fast is it? On one H100 in under 8 minutes, most of it compiling:

$ python -m tools.gpu_check --out=gpu_check.json

- the OpenWebText preset's network (config/train_owt.py: 12 x 768, L = 1024, K = 50258), compiled, in
  bfloat16 autocast: `steps` training steps of the FLM and of AR on synthetic tokens, through train.py's
  own step (runs.train_step: its on-device non-finite guard), with tokens/s and MFU (runs.train_flops
  over the device's peak: --peak_flops, else runs.PEAK_FLOPS by the GPU's name);
- the one-step FMLM's latency for one 1024-token sample (a stage-2 flow map, random weights);
- the peak memory of each part (allocated, on a GPU; this process's peak resident set on a CPU);
- a 2-iteration run of train.py under `torchrun --nproc_per_node=1` with the preset's options on synthetic
  data, saved, then resumed for 2 more: both must finish, and the checkpoint must say iteration 4.
A failed part is recorded with its error and the rest still runs; the exit status is 1 if any failed.
The tests run it on a CPU at toy size (tests/test_gpu_path.py):
$ python -m tools.gpu_check --device=cpu --dtype=bfloat16 --compile=False --L=16 --K=40 --n_layer=1 ...
"""

import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

import flm
from tools import runs
from configurator import configure, die, run_config_file
from tools.runs import system

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(ROOT, 'config', 'train_owt.py')
preset = run_config_file(PRESET)  # the OWT preset's network and batch
# -----------------------------------------------------------------------------
L = preset['block_size']
K = 50258                 # the paper's OWT vocabulary: GPT-2's BPE and a pad token
n_layer = preset['n_layer']
n_head = preset['n_head']
n_embd = preset['n_embd']
n_cond = preset['n_cond']
batch = preset['batch_size']  # per GPU
steps = 100               # timed training steps of each of FLM and AR (after 3 untimed: compiling)
reps = 5                  # timed one-step samples (the median is reported)
device = 'cuda'
dtype = 'bfloat16'
compile = True
peak_flops = 0.0          # 0: runs.PEAK_FLOPS by the GPU's name
torchrun = True           # also the 2 + 2 iteration torchrun run of train.py, saved and resumed
run_timeout = 240         # seconds each of those two train.py runs may take
seed = 1337
out = 'gpu_check.json'
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and k not in ('ROOT', 'PRESET')
               and isinstance(v, (int, float, bool, str))]
config = configure({k: globals()[k] for k in config_keys}, sys.argv[1:])
globals().update(config)
for key in ('L', 'K', 'n_layer', 'n_head', 'n_embd', 'n_cond', 'batch', 'steps', 'reps', 'run_timeout'):
    if config[key] < 1:
        die(f"--{key} must be >= 1, got {config[key]}")
if n_embd % n_head or n_embd // n_head % 2 or K < 2 or K > 65536 or peak_flops < 0:
    die("--n_head must divide --n_embd into heads of even width, --K be in 2..65536 and --peak_flops >= 0")
device, device_type, dtype, ctx = system(device, dtype)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
peak = runs.peak_flops(device, peak_flops)
args = dict(vocab_size=K, block_size=L, n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_cond=n_cond,
            dropout=preset['dropout'])
table = flm.g_table(K, device)
report = {'config': config, 'device': torch.cuda.get_device_name(device) if device_type == 'cuda' else device,
          'dtype': dtype, 'torch': torch.__version__, 'peak_flops': peak, 'parts': {}}


def sync():
    if device_type == 'cuda':
        torch.cuda.synchronize()


def reset_peak():
    if device_type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_bytes():
    """The peak allocated memory since reset_peak() on a GPU; this process's peak resident set on a CPU."""
    if device_type == 'cuda':
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def part(name):
    """Run a part, record its figures or its error; the others run either way."""
    def run(fn):
        t0 = time.time()
        try:
            report['parts'][name] = {'ok': True, **fn()}
        except Exception as e:
            report['parts'][name] = {'ok': False, 'error': f"{type(e).__name__}: {e}",
                                     'traceback': traceback.format_exc()[-3000:]}
        report['parts'][name]['seconds'] = time.time() - t0
        print(f"{name}: {json.dumps({k: v for k, v in report['parts'][name].items() if k != 'traceback'})}",
              flush=True)
    return run


def training(kind):
    torch.manual_seed(seed)
    net = runs.network(kind, args).to(device)
    model = torch.compile(net) if compile else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device_type == 'cuda')
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == 'float16')
    guard, loss_fn = runs.new_guard(device), runs.loss_fn(kind, K, table)
    x = torch.randint(0, K, (batch, L), device=device)
    step = lambda it: runs.train_step(model, loss_fn, lambda: x, opt, scaler, 1.0, 1, ctx, guard, it)
    reset_peak()
    t0 = time.time()
    for it in range(3):  # compiles
        step(it)
    sync()
    warmup = time.time() - t0
    t0 = time.time()
    for it in range(3, 3 + steps):
        loss = step(it)
    sync()
    dt = time.time() - t0
    if guard['failed'].item() or not torch.isfinite(loss).item():
        raise RuntimeError(f"non-finite loss or update at step {guard['iter'].item()}")
    flops = runs.train_flops(kind, net, batch, L) * steps / dt
    return {'tokens_per_s': batch * L * steps / dt, 'ms_per_step': 1000 * dt / steps,
            'mfu': flops / peak if peak else None, 'flops_per_s': flops, 'warmup_s': warmup, 'loss': loss.item(), 'peak_memory_bytes': peak_bytes(),
            'batch': batch, 'params': net.num_params()}


def one_step_sample():
    torch.manual_seed(seed)
    teacher = runs.network('flm', args).to(device).requires_grad_(False)
    net = flm.flow_map_student(teacher, 2).eval().requires_grad_(False)
    sample = runs.sampler('stage2', torch.compile(net) if compile else net, table)
    gen = torch.Generator(device=device).manual_seed(seed)
    reset_peak()
    times = []
    with torch.no_grad(), ctx:
        for _ in range(2 + reps):  # the first two: compiling
            t0 = time.time()
            ids = sample(1, L, 1, generator=gen, device=device)
            sync()
            times.append(time.time() - t0)
    return {'latency_ms': 1000 * sorted(times[2:])[len(times[2:]) // 2], 'first_call_s': times[0],
            'tokens': ids.numel(), 'peak_memory_bytes': peak_bytes()}


def torchrun_save_and_resume():
    """train.py under torchrun, one process, with the OWT preset on synthetic data: 2 iterations, saved,
    then resumed to 4. The network's size, the device and dtype are this check's."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, 'data')
        os.makedirs(data_dir)
        rng = np.random.default_rng(seed)
        for split, n in (('train', 64 * L), ('val', 8 * L)):
            rng.integers(0, K, n, dtype=np.uint16).tofile(os.path.join(data_dir, f'{split}.bin'))
        symbols = [chr(0x10000 + i) for i in range(K)]  # K printable characters: a char vocabulary of size K
        with open(os.path.join(data_dir, 'meta.pkl'), 'wb') as f:
            pickle.dump({'vocab_size': K, 'stoi': {c: i for i, c in enumerate(symbols)},
                         'itos': dict(enumerate(symbols))}, f)
        common = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1',
                  os.path.join(ROOT, 'train.py'), PRESET, f'--dataset={data_dir}', f'--out_dir={tmp}/run',
                  f'--block_size={L}', f'--n_layer={n_layer}', f'--n_head={n_head}', f'--n_embd={n_embd}',
                  f'--n_cond={n_cond}', f'--batch_size={batch}', '--gradient_accumulation_steps=2',
                  '--eval_interval=2', '--eval_iters=1', '--eval_sample_steps=2', '--log_interval=1',
                  f'--device={device_type}', f'--dtype={dtype}', f'--compile={compile}', f'--peak_flops={peak}']
        env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
        runs = {}
        for name, extra in (('first', ['--max_iters=2']), ('resumed', ['--max_iters=4', '--init_from=resume'])):
            t0 = time.time()
            r = subprocess.run(common + extra, cwd=tmp, capture_output=True, text=True, timeout=run_timeout, env=env)
            log = [line for line in r.stdout.splitlines() if line.startswith(('iter', 'saved', 'resume'))]
            runs[name] = {'returncode': r.returncode, 'seconds': time.time() - t0, 'log': log}
            if r.returncode:
                raise RuntimeError(f"the {name} run failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        ckpt = torch.load(os.path.join(tmp, 'run', 'ckpt.pt'), map_location='cpu', weights_only=True)
        if ckpt['iter_num'] != 4 or not any(line.startswith('iter 4:') for line in runs['resumed']['log']):
            raise RuntimeError(f"the resumed run ended at iteration {ckpt['iter_num']}, not 4")
        return {'runs': runs, 'iter_num': ckpt['iter_num']}


print(f"gpu check on {report['device']} ({dtype}{', compiled' if compile else ''}), peak {peak:.3g} FLOP/s", flush=True)
part('train FLM')(lambda: training('flm'))
part('train AR')(lambda: training('ar'))
part('FMLM one-step sample')(one_step_sample)
if torchrun:
    part('torchrun save and resume')(torchrun_save_and_resume)
report['ok'] = all(p['ok'] for p in report['parts'].values())
with open(out, 'w') as f:
    json.dump(report, f, indent=1)
failed = [k for k, p in report['parts'].items() if not p['ok']]
print(f"wrote {out}: {'FAILED: ' + ', '.join(failed) if failed else 'all parts ok'}")
sys.exit(0 if report['ok'] else 1)
