"""train.py and sample.py end to end, in a temp dir, on a tiny character dataset."""
import hashlib
import json
import os
import re
import shutil
import sys

import pytest
import torch

from conftest import run_script

TINY = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--n_cond=16', '--block_size=32', '--batch_size=4',
        '--eval_iters=1', '--eval_sample_steps=2', '--log_interval=1', '--dropout=0.1', '--warmup_iters=2']


def train(cwd, *args, **kw):
    return run_script('train.py', *TINY, *args, cwd=cwd, **kw)


def losses(stdout):
    return {int(i): l for i, l in re.findall(r"^iter (\d+): loss ([0-9.]+)", stdout, re.M)}


def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, char_dataset):
    """An uninterrupted 8-iteration run, and one stopped at 4 and resumed to 8."""
    cwd = tmp_path_factory.mktemp("run")
    common = [f'--dataset={char_dataset}', '--eval_interval=4', '--lr_decay_iters=8']
    full = train(cwd, *common, '--max_iters=8', '--out_dir=full')
    assert full.returncode == 0, full.stderr
    first = train(cwd, *common, '--max_iters=4', '--out_dir=split')
    assert first.returncode == 0, first.stderr
    resumed = train(cwd, *common, '--max_iters=8', '--out_dir=split', '--init_from=resume')
    assert resumed.returncode == 0, resumed.stderr
    return cwd, full, first, resumed


def test_training_logs_and_checkpoints(trained):
    cwd, full, _, _ = trained
    assert sorted(losses(full.stdout)) == list(range(1, 9))
    assert re.search(r"iter 8: loss [0-9.]+, lr [0-9.e+-]+, [0-9.]+ ms/iter, [0-9,]+ tokens/s", full.stdout)
    assert "context gain" in full.stdout and "sample (2 steps)" in full.stdout
    assert sorted(os.listdir(cwd / 'full')) == ['ckpt.pt', 'eval_log.jsonl']  # no temp file left
    evals = [json.loads(line) for line in open(cwd / 'full' / 'eval_log.jsonl')]
    assert [e['iter'] for e in evals] == [0, 4, 8] and all('gain' in e['val'] for e in evals)
    ckpt = torch.load(cwd / 'full' / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 8 and ckpt['kind'] == 'flm'
    assert {'model', 'ema', 'optimizer', 'model_args', 'config', 'meta', 'rng'} <= set(ckpt)
    assert not all(torch.equal(ckpt['model'][k], ckpt['ema'][k]) for k in ckpt['model'])


def test_resume_continues_exactly(trained):
    _, full, first, resumed = trained
    assert sorted(losses(first.stdout)) == [1, 2, 3, 4]
    after = losses(resumed.stdout)
    assert sorted(after) == [5, 6, 7, 8]
    assert after == {i: losses(full.stdout)[i] for i in (5, 6, 7, 8)}


def test_sample_to_json_keeps_the_prompt(trained):
    cwd, *_ = trained
    r = run_script('sample.py', '--out_dir=full', '--steps=4', '--num_samples=3', '--start=the cat',
                   '--out=s.json', '--seed=7', cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "s per sample" in r.stdout
    out = json.load(open(cwd / 's.json'))
    assert len(out['samples']) == 3 and out['settings']['steps'] == 4
    assert all(s.startswith('the cat') and len(s) == 32 for s in out['samples'])
    # a prompt from a file, and the same seed gives the same samples
    (cwd / 'prompt.txt').write_text('the cat')
    again = run_script('sample.py', '--out_dir=full', '--steps=4', '--num_samples=3', '--start=FILE:prompt.txt',
                       '--out=s2.json', '--seed=7', cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert json.load(open(cwd / 's2.json'))['samples'] == out['samples']


def assert_one_line_error(r, *words):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:'), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("args, words", [
    (['--dataset=no_such_dataset'], ['no_such_dataset', 'prepare']),
    (['--no_such_key=3'], ['no_such_key', 'batch_size', 'learning_rate']),
    (['--batch_size=abc'], ['batch_size', 'int']),
    (['--learning_rate=True'], ['learning_rate', 'float']),
    (['--max_iters=0'], ['max_iters']),
    (['--init_from=pretrained'], ['init_from']),
])
def test_train_bad_input(trained, args, words):
    cwd, *_ = trained
    before = digest(cwd / 'full' / 'ckpt.pt')
    r = train(cwd, '--out_dir=full', *args)
    assert_one_line_error(r, *words)
    assert digest(cwd / 'full' / 'ckpt.pt') == before


@pytest.mark.parametrize("args, words", [
    (['--steps=0'], ['steps']),
    (['--eta=1.5'], ['eta']),
    (['--start=the cat\u00e9\u00df'], ['vocabulary']),
    (['--start=' + 'the cat ' * 5], ['longer than the block']),
    (['--out_dir=nowhere'], ['no checkpoint', 'nowhere']),
    (['--stepz=3'], ['stepz', 'steps']),
])
def test_sample_bad_input(trained, args, words):
    cwd, *_ = trained
    before = digest(cwd / 'full' / 'ckpt.pt')
    assert_one_line_error(run_script('sample.py', '--out_dir=full', *args, cwd=cwd), *words)
    assert digest(cwd / 'full' / 'ckpt.pt') == before


def test_corrupt_checkpoint(trained, char_dataset):
    cwd, *_ = trained
    os.makedirs(cwd / 'bad', exist_ok=True)
    (cwd / 'bad' / 'ckpt.pt').write_bytes(b'not a checkpoint')
    assert_one_line_error(run_script('sample.py', '--out_dir=bad', cwd=cwd), 'cannot load')
    r = train(cwd, f'--dataset={char_dataset}', '--out_dir=bad', '--init_from=resume')
    assert_one_line_error(r, 'cannot resume')
    assert (cwd / 'bad' / 'ckpt.pt').read_bytes() == b'not a checkpoint'
    assert_one_line_error(train(cwd, f'--dataset={char_dataset}', '--out_dir=empty', '--init_from=resume'),
                          'no checkpoint')


def test_ddp_two_processes_on_cpu(tmp_path, char_dataset):
    r = train(tmp_path, f'--dataset={char_dataset}', '--max_iters=4', '--eval_interval=2', '--out_dir=ddp',
              '--device=cpu', '--gradient_accumulation_steps=2',
              launcher=[sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'],
              env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 process(es)" in r.stdout
    assert r.stdout.count("saved checkpoint") == 3  # iters 0, 2, 4: rank 0 alone writes
    assert sorted(os.listdir(tmp_path / 'ddp')) == ['ckpt.pt', 'eval_log.jsonl']
    ckpt = torch.load(tmp_path / 'ddp' / 'ckpt.pt', weights_only=True)
    # each rank's fingerprint of its weights at the last checkpoint: equal, and equal to the saved weights
    saved = sum(v.double().abs().sum() for k, v in ckpt['model'].items()).item()
    assert len(ckpt['weight_fingerprints']) == 2
    assert ckpt['weight_fingerprints'][0] == ckpt['weight_fingerprints'][1]
    assert abs(ckpt['weight_fingerprints'][0] - saved) < 1e-9 * saved
    # the ranks drew different batches: their RNG streams differ
    assert not torch.equal(ckpt['rng'][0]['cpu'], ckpt['rng'][1]['cpu'])
