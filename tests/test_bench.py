"""bench.py's GPU preset (config/bench_owt_gpu.py) on a tiny network on the CPU: only the FLM's and AR's
training steps and the one-step FMLM are timed, with tokens/s and an MFU whose FLOPs per token are
nanoGPT's 6 N + 12 n_layer d L, N counted by hand (the FLM's K x d input layer is a matrix product,
AR's embedding a lookup); a wrong name is a one-line error. The sampler's memory: with K >> d, its
state in d dims takes far less than the dense (B, L, K) state."""
import json
import os

import pytest

from conftest import ROOT, run_script
from test_scripts import assert_one_line_error

TINY = ['--device=cpu', '--dtype=float32', '--compile=False', '--L=16', '--K=11', '--n_layer=1', '--n_embd=16',
        '--n_head=2', '--n_cond=8', '--train_batch=2', '--reps=1', '--mem_gb=1']


def test_gpu_preset_on_a_tiny_cpu_network(tmp_path):
    preset = os.path.join(ROOT, 'config', 'bench_owt_gpu.py')
    r = run_script('bench.py', preset, *TINY, '--peak_flops=1e9', '--out=b.json', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.load(open(tmp_path / 'b.json'))['results'][0]
    assert set(res['train']) == set(res['tokens_per_s']) == set(res['mfu']) == {'FLM', 'AR'}
    assert set(res['latency']) == {'FMLM 1 step'} and res['batch'] == 1 and res['train_batch'] == 2
    d, K, L = 16, 11, 16
    blocks = 12 * d * d + 5 * d            # qkv, proj (no bias), the MLP's two layers (with bias)
    head = d * K + K
    for name, N in (('FLM', K * d + blocks + head), ('AR', blocks + head)):
        flops = (6 * N + 12 * 1 * d * L) * res['tokens_per_s'][name]
        assert abs(res['mfu'][name] - flops / 1e9) < 1e-9 * flops
    assert res['tokens_per_s']['FLM'] == 2 * L / res['train']['FLM']
    assert 'MFU' in r.stdout and 'FMLM 1 step' in r.stdout
    assert_one_line_error(run_script('bench.py', *TINY, '--train=flm,gpt', cwd=tmp_path), '--train', 'flowmap')


def test_sampler_memory_of_the_d_dim_state_against_the_dense_state(tmp_path):
    if not os.access('/proc/self/clear_refs', os.W_OK):
        pytest.skip("the peak resident set is read from Linux's /proc")
    r = run_script('bench.py', '--device=cpu', '--L=64', '--K=4096', '--n_layer=1', '--n_embd=16', '--n_head=2',
                   '--n_cond=8', '--train=', '--samplers=', '--mem_steps=2', '--mem_tokens=2048', '--out=m.json',
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.load(open(tmp_path / 'm.json'))['results'][0]
    dense, projected = res['memory']['dense'], res['memory']['d-space']
    state = 32 * 64 * 4096 * 4  # one (B, L, K) float32 tensor: 32 MiB
    # dense: the state, its noise, the logits, the softmax and the update at least; d dims: the logits'
    assert dense > 3 * state and projected < 0.6 * dense, (projected, dense)
    assert 'd-space / dense' in r.stdout
