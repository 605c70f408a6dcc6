"""The GPU path, proven as far as a CPU can: a compiled training step (torch.compile, inductor) equals the
eager one for the FLM and the one-network flow map, with the state in R^K and projected (K > d); every
kind trains in bfloat16 and in float16 (with its GradScaler); the samplers' state stays in float32 under
half-precision autocast; the training step's non-finite guard undoes a bad update on the device, without
reading anything back to the host, and train.py stops at the next log line with one line; the model FLOPs
behind the logged MFU against torch's FLOP counter; two DDP processes make the update of one process that
accumulates their two batches; tools/gpu_check.py runs at toy size on the CPU."""
import json
import math
import os
import re
import socket
import subprocess
import sys
from contextlib import nullcontext

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import flm
from configurator import overrides
from tools import runs

TINY = dict(block_size=16, n_layer=1, n_head=2, n_cond=16)


def tiny(kind, K, d=32, teacher=None):
    """A tiny network of the kind (a flow map: its student made from `teacher`)."""
    torch.manual_seed(0)
    net = (flm.flow_map_student(teacher, 1 if kind == 'stage1' else 2) if kind in runs.FLOW_MAPS
           else runs.network(kind, dict(vocab_size=K, n_embd=d, **TINY)))
    with torch.no_grad():  # a network that is not at its zero-initialised start: outputs that depend on the input
        for name, p in net.named_parameters():
            if 'adaLN' in name or 'head' in name or 'time_embed2' in name:  # a student unlike its teacher
                p.normal_(0, 0.05)
    return net


def grads_of_one_step(net, loss_of, seed):
    torch.manual_seed(seed)  # the same times and noise, eager and compiled
    loss = loss_of()
    loss.backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_a_compiled_training_step_equals_the_eager_one():
    """The loss and every gradient of one step with the network compiled (inductor, fullgraph=True: a graph
    break fails) against eager: the FLM and the one-network flow map, each with its state in R^K (K = 65 <= d)
    and projected (K = 200 > d, the path of the OpenWebText FLM; the flow map's student and teacher side by
    side), the student's no-grad target passes compiled too. The losses and their state spaces stay eager
    by design (they pick each network's columns and factorize a Gram in float64 every step): the networks
    are what is compiled, as in train.py."""
    # this proves that the networks trace without a graph break and compute what the eager ones do, not how
    # fast: one compile process (a pool of workers would start its own torches), C++ kernels built at -O0 and
    # without SIMD, which takes a third less time than inductor's default
    fast_build = {'compile_threads': 1, 'aot_inductor.debug_compile': True, 'cpp.vec_isa_ok': False}
    for kind, K, d in (('flm', 65, 80), ('flm', 200, 32), ('flowmap', 65, 80), ('flowmap', 200, 32)):
        table = flm.g_table(K)
        x = torch.randint(0, K, (4, TINY['block_size']), generator=torch.Generator().manual_seed(1))
        teacher = tiny('flm', K, d).requires_grad_(False)
        net = tiny(kind, K, d, teacher)
        loss_fn = runs.loss_fn(kind, K, table, teacher)
        assert flm.StateSpace(K, [net] + ([teacher] if kind == 'flowmap' else [])).projected == (K > d)
        compiled = torch.compile(net, fullgraph=True)
        eager_loss, eager_grads = grads_of_one_step(net, lambda: loss_fn(net, x), seed=2)
        with torch._inductor.config.patch(fast_build):
            loss, grads = grads_of_one_step(net, lambda: loss_fn(compiled, x), seed=2)
        assert eager_loss.item() > 0.01
        torch.testing.assert_close(loss, eager_loss, atol=1e-4, rtol=0)
        assert sum(g.abs().sum() for g in eager_grads) > 1e-3
        for g, e in zip(grads, eager_grads):
            torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-3)


def make_kind(kind, K, d=32):
    """(network, its loss_fn) of every kind, the flow maps distilled from a tiny FLM teacher."""
    table = flm.g_table(K)
    teacher = tiny('flm', K, d).requires_grad_(False)
    residual = tiny('stage1', K, d, teacher).requires_grad_(False) if kind == 'stage2' else None
    net = tiny(kind, K, d, teacher)
    return net, runs.loss_fn(kind, K, table, teacher, residual), teacher, residual


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_every_kind_trains_in_half_precision(dtype):
    """Under CPU autocast (float16 with its GradScaler, as train.py sets them up), 8 steps of each kind on
    one batch: finite losses, the guard never trips, and the loss at fixed times and noise falls."""
    K = 24
    x = torch.randint(0, K, (4, TINY['block_size']), generator=torch.Generator().manual_seed(1))
    ctx = torch.autocast('cpu', dtype=getattr(torch, dtype))
    for kind in runs.KINDS:
        net, loss_fn, _, _ = make_kind(kind, K)
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-3)
        scaler = torch.amp.GradScaler('cpu', enabled=dtype == 'float16')
        guard = runs.new_guard('cpu')

        def fixed_loss():
            torch.manual_seed(7)
            with torch.no_grad(), ctx:
                return loss_fn(net, x).item()
        before, losses = fixed_loss(), []
        for it in range(8):
            torch.manual_seed(100 + it)
            losses.append(runs.train_step(net, loss_fn, lambda: x, opt, scaler, 1.0, 1, ctx, guard, it).item())
        after = fixed_loss()
        assert all(math.isfinite(v) for v in losses) and not guard['failed'], (kind, losses)
        assert after < before, (kind, dtype, before, after)


class HostReadError(AssertionError):
    pass


def no_host_reads(monkeypatch):
    """Any read of a tensor's value into Python (item, bool, float, int, tolist) raises: on a GPU each would
    wait for the device."""
    def refuse(*args, **kw):
        raise HostReadError("a tensor's value was read on the host")
    for name in ('item', '__bool__', '__float__', '__int__', '__index__', 'tolist'):
        monkeypatch.setattr(torch.Tensor, name, refuse)


def test_the_guard_undoes_a_non_finite_update_without_reading_the_device(monkeypatch):
    """A NaN loss at step k: that update and every later one are undone on the device (the weights stay
    those before step k), the guard holds step k and its loss, and no step reads a tensor on the host (the
    fused AdamW, which GPUs use, takes its step counts on the device). Then a finite gradient that a huge
    learning rate turns into an infinite weight: undone too, which a guard of the gradient alone is not."""
    K, k = 24, 2
    net, loss_fn, _, _ = make_kind('flm', K)
    x = torch.randint(0, K, (4, TINY['block_size']), generator=torch.Generator().manual_seed(1))
    nan_at_k = lambda model, x: loss_fn(model, x) * (math.nan if step == k else 1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, fused=True)
    scaler, guard = torch.amp.GradScaler('cpu', enabled=False), runs.new_guard('cpu')
    weights = []
    with monkeypatch.context() as m:
        no_host_reads(m)
        for step in range(5):
            weights.append([p.detach().clone() for p in net.parameters()])
            runs.train_step(net, nan_at_k, lambda: x, opt, scaler, 1.0, 1, nullcontext(), guard, step)
    assert guard['failed'].item() and guard['iter'].item() == k and math.isnan(guard['loss'].item())
    assert not all(torch.equal(a, b) for a, b in zip(weights[0], weights[1]))  # steps before k update
    assert all(torch.equal(a, b) for a, b in zip(weights[k], net.parameters()))
    with pytest.raises(SystemExit, match=f"iteration {k}: .*not finite.*iteration 0 is untouched"):
        runs.guard_failed(guard, 0, 'ckpt.pt')

    w = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        w.weight.fill_(3.4e38)  # float32's largest is 3.40282e38: one more step of 1e37 overflows
    opt, guard = torch.optim.AdamW(w.parameters(), lr=1e37, weight_decay=0.0), runs.new_guard('cpu')
    runs.train_step(w, lambda model, x: -model.weight.sum(), lambda: None, opt, scaler, 0.0, 1, nullcontext(),
                     guard, 9)
    assert guard['failed'].item() and guard['iter'].item() == 9 and guard['loss'].item() == -torch.tensor(3.4e38).item()
    assert w.weight.item() == torch.tensor(3.4e38).item()


def test_a_huge_learning_rate_stops_at_the_next_log_line_with_the_checkpoint_untouched(tmp_path, char_dataset):
    """train.py on a tiny float16 run whose state is projected (K > d, the Gram's Cholesky each step): its log
    line shows an MFU in (0, 1) of the --peak_flops given. Resumed with --learning_rate=1e30: the weights
    blow up after a finite gradient, the next step's loss is NaN; the run stops at the next log line with the
    one-line error naming that step, the checkpoint's bytes unchanged. --learning_rate=3e38 (AdamW's first
    step beyond float32) and 1e400 (inf) are refused before any work."""
    from test_scripts import TINY as SCRIPT_TINY, assert_one_line_error, digest, train
    from conftest import run_scripts
    run = [f'--dataset={char_dataset}', '--n_embd=16', '--out_dir=run']
    r = train(tmp_path, *run, '--max_iters=4', '--eval_interval=4', '--dtype=float16', '--peak_flops=1e10',
              '--lr_decay_iters=4')
    assert r.returncode == 0, r.stderr
    mfu = [float(v) for v in re.findall(r"MFU ([0-9.]+)%", r.stdout)]
    assert len(mfu) == 4 and all(0 < v < 100 for v in mfu), r.stdout
    before = digest(tmp_path / 'run' / 'ckpt.pt')
    resume = ['train.py', *SCRIPT_TINY, *run, '--init_from=resume', '--max_iters=40', '--warmup_iters=0',
              '--decay_lr=False']
    huge, beyond = run_scripts([(*resume, '--learning_rate=1e30', '--log_interval=5'),
                                (*resume, '--learning_rate=3e38')], tmp_path)
    # iteration 4's update makes the weights ~1e30, iteration 5's loss is NaN: stopped at the log line of 5
    assert_one_line_error(huge, 'iteration 5: the loss, gradient or weights are not finite',
                          'iteration 4 is untouched', 'learning_rate')
    assert 'iter 5:' in huge.stdout and 'iter 10:' not in huge.stdout and 'saved' not in huge.stdout
    assert_one_line_error(beyond, '--learning_rate must be > 0 and below 3.4e+37')
    with pytest.raises(SystemExit, match="--learning_rate takes a finite number, got inf"):
        overrides({'learning_rate': 1e-3}, ['--learning_rate=1e400'])
    assert digest(tmp_path / 'run' / 'ckpt.pt') == before


class CountFlops(TorchDispatchMode):
    """The FLOPs of the matrix products (and attention) run under it, by torch's own per-op formulas."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **(kwargs or {}), out_val=out)
        return out


def test_the_mfu_counts_the_flops_of_each_kinds_training_step():
    """runs.train_flops, behind the logged MFU, against the FLOPs torch counts in the same step (a forward
    and backward of the kind's loss), for every kind, the state in R^K (K = 24) and projected (K = 200):
    at most 10% above (nanoGPT's rule counts causal attention in full and leaves the time conditioning
    out), never below. The no-grad target passes of a distillation and the projections count."""
    for K in (24, 200):
        for kind in runs.KINDS:
            net, loss_fn, teacher, residual = make_kind(kind, K)
            x = torch.randint(0, K, (8, TINY['block_size']))
            with CountFlops() as counted:
                loss_fn(net, x).backward()
            ratio = runs.train_flops(kind, net, 8, TINY['block_size'], teacher, residual) / counted.total
            assert 1.0 <= ratio < 1.1, (K, kind, ratio)


def test_the_samplers_keep_a_float32_state_under_half_precision():
    """The FLM's Euler sampler, stage 1's and a flow map's (stage 2) under bfloat16 and float16 autocast, the
    state in R^K (K = 24) and projected (K = 200): every state a network reads is float32 (method.md 7's
    full-precision state: the noise z @ R and the projections leave autocast), and the tokens are those of
    the float32 sampler but for rounding near ties (>= 95% of them)."""
    for K in (24, 200):
        teacher = tiny('flm', K)
        table = flm.g_table(K)
        for kind, net, steps in (('flm', teacher, 32), ('stage1', tiny('stage1', K, teacher=teacher), 4),
                                 ('stage2', tiny('stage2', K, teacher=teacher), 4)):
            dtypes = []
            hook = net.register_forward_pre_hook(lambda m, args: dtypes.append(args[0].dtype))
            sample, out = runs.sampler(kind, net, table, teacher), {}
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                with torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32):
                    out[dtype] = sample(8, TINY['block_size'], steps, generator=torch.Generator().manual_seed(0))
            hook.remove()
            assert len(dtypes) == 3 * steps and set(dtypes) == {torch.float32}, (K, kind, dtypes)
            for dtype in (torch.bfloat16, torch.float16):
                assert (out[dtype] == out[torch.float32]).float().mean() >= 0.95, (K, kind, dtype)


def feeder(batches, seeds):
    """next_batch() for runs.train_step: the batches in turn, each with its own seed for the loss's noise."""
    items = iter(zip(batches, seeds))

    def next_batch():
        x, seed = next(items)
        torch.manual_seed(seed)
        return x
    return next_batch


def ddp_setup(kind):
    K = 24
    torch.manual_seed(0)
    teacher = tiny('flm', K).requires_grad_(False)
    net = runs.student(kind, teacher, weighted=False) if kind == 'flowmap' else tiny(kind, K)
    x = torch.randint(0, K, (2, 2, TINY['block_size']), generator=torch.Generator().manual_seed(1))
    # SGD: an update proportional to the gradient, so a miscounted accumulation shows (AdamW's would not)
    return net, torch.optim.SGD(net.parameters(), lr=0.5), runs.loss_fn(kind, K, flm.g_table(K), teacher), x


def ddp_rank(rank, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
    for kind in DDP_KINDS:
        net, opt, loss_fn, x = ddp_setup(kind)
        model = torch.nn.parallel.DistributedDataParallel(net)
        scaler, guard = torch.amp.GradScaler('cpu', enabled=False), runs.new_guard('cpu')
        for it in range(2):
            runs.train_step(model, loss_fn, feeder([x[rank]], [10 * it + rank]), opt, scaler, 0.0, 1, nullcontext(),
                            guard, it, ddp=True)
        if rank == 0:
            torch.save(net.state_dict(), f'{out}.{kind}')
    torch.distributed.destroy_process_group()


DDP_KINDS = ('flm', 'flowmap')


def test_two_ddp_processes_make_the_update_of_one_process_accumulating_two_batches(tmp_path):
    """Two gloo processes, each one batch per step (accumulation 1), against one process with accumulation
    2 on the same two batches with the same noise: the same weights after two steps. The FLM, and the
    one-network flow map, whose unused loss weighting runs.student freezes (else DDP stops at step 2)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(ddp_rank, args=(port, str(tmp_path / 'ddp.pt')), nprocs=2)
    for kind in DDP_KINDS:
        net, opt, loss_fn, x = ddp_setup(kind)
        scaler, guard = torch.amp.GradScaler('cpu', enabled=False), runs.new_guard('cpu')
        start = {k: v.clone() for k, v in net.state_dict().items()}
        for it in range(2):
            runs.train_step(net, loss_fn, feeder([x[0], x[1]], [10 * it, 10 * it + 1]), opt, scaler, 0.0, 2,
                            nullcontext(), guard, it)
        ddp = torch.load(f'{tmp_path}/ddp.pt.{kind}', weights_only=True)
        assert any(not torch.equal(start[k], v) for k, v in net.state_dict().items())
        for k, v in net.state_dict().items():
            torch.testing.assert_close(ddp[k], v, atol=1e-6, rtol=1e-5)


def test_the_gpu_check_runs_at_toy_size_on_a_cpu(tmp_path):
    """python -m tools.gpu_check, shrunk to a toy network on the CPU in bfloat16: every part finishes and
    writes its figures to the one JSON (tokens/s and an MFU in (0, 1) for FLM and AR, the one-step sample's
    latency, peak memory, the torchrun run saved at iteration 2 and resumed to 4)."""
    from conftest import ROOT
    cmd = [sys.executable, '-m', 'tools.gpu_check', '--device=cpu', '--dtype=bfloat16', '--compile=False', '--L=16',
           '--K=40', '--n_layer=1', '--n_head=2', '--n_embd=32', '--n_cond=16', '--batch=2', '--steps=2', '--reps=1',
           '--peak_flops=1e10', f'--out={tmp_path}/check.json']
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.load(open(tmp_path / 'check.json'))
    parts = report['parts']
    assert report['ok'] and report['dtype'] == 'bfloat16' and report['peak_flops'] == 1e10
    for name in ('train FLM', 'train AR'):
        assert parts[name]['tokens_per_s'] > 0 and 0 < parts[name]['mfu'] < 1 and parts[name]['peak_memory_bytes'] > 0
        assert math.isfinite(parts[name]['loss'])
    assert parts['FMLM one-step sample']['latency_ms'] > 0 and parts['FMLM one-step sample']['tokens'] == 16
    runs = parts['torchrun save and resume']['runs']
    assert parts['torchrun save and resume']['iter_num'] == 4
    assert [line.split(':')[0] for line in runs['resumed']['log'] if line.startswith('iter')] == ['iter 3', 'iter 4']
    assert 'MFU' in runs['first']['log'][1]
