"""Nothing lost, nothing run: what train.py, sample.py and eval.py guarantee when a run diverges,
is interrupted (SIGTERM at a random iteration; a campaign of kill -9 at random moments), resumed
with other options, or given hostile or broken inputs (a meta.pkl that would run code, broken
data files, a torch file that is not a checkpoint, malformed samples files, a full disk)."""
import datetime
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from configurator import configure, int_list
from conftest import ROOT, TOY_TEXT, run_script, write_char_dataset
from test_scripts import TINY, assert_one_line_error, digest, losses, train, train_all


@pytest.fixture(scope="module")
def run(tmp_path_factory, char_dataset):
    """A tiny finished run (8 iterations, checkpoints at 4 and 8)."""
    cwd = tmp_path_factory.mktemp("rel")
    r = train(cwd, f'--dataset={char_dataset}', '--max_iters=8', '--eval_interval=4', '--lr_decay_iters=8',
              '--out_dir=good')
    assert r.returncode == 0, r.stderr
    return cwd


def test_a_diverging_run_stops_at_once_and_leaves_the_checkpoint_untouched(run):
    before = digest(run / 'good' / 'ckpt.pt')
    r = train(run, '--out_dir=good', '--init_from=resume', '--max_iters=40', '--learning_rate=1e30',
              '--warmup_iters=0', '--decay_lr=False')
    assert_one_line_error(r, 'not finite', 'iteration', 'learning_rate', 'iteration 8 is untouched')
    assert digest(run / 'good' / 'ckpt.pt') == before
    assert 'saved checkpoint' not in r.stdout


def test_sample_refuses_non_finite_weights(run):
    ckpt = torch.load(run / 'good' / 'ckpt.pt', weights_only=True)
    next(iter(ckpt['ema'].values())).fill_(float('nan'))
    os.makedirs(run / 'nan', exist_ok=True)
    torch.save(ckpt, run / 'nan' / 'ckpt.pt')
    assert_one_line_error(run_script('sample.py', '--out_dir=nan', cwd=run), 'not finite')


def popen_train(cwd, *args):
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), *TINY, *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'})


def weights(path):
    ckpt = torch.load(path, weights_only=True)
    return {f'{part}.{k}': v for part in ('model', 'ema') for k, v in ckpt[part].items()}, ckpt


def assert_same_weights(a, b):
    (wa, ca), (wb, cb) = weights(a), weights(b)
    assert ca['iter_num'] == cb['iter_num'] and wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]


def test_sigterm_saves_at_an_iteration_boundary_and_resumes_exactly(tmp_path, char_dataset):
    common = [f'--dataset={char_dataset}', '--max_iters=14', '--eval_interval=100', '--lr_decay_iters=14']
    full = train(tmp_path, *common, '--out_dir=full')
    assert full.returncode == 0, full.stderr
    k = random.Random().randint(2, 9)  # any iteration will do
    proc = popen_train(tmp_path, *common, '--out_dir=cut')
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith(f'iter {k}:'):
            proc.send_signal(signal.SIGTERM)  # lands somewhere in iteration k + 1
            break
    rest, err = proc.communicate(timeout=120)
    out = ''.join(out) + rest
    assert proc.returncode == 128 + signal.SIGTERM, err
    stopped = int(out.split('stopped by signal')[1].split('at iter ')[1].split(';')[0])
    assert stopped in (k, k + 1), out  # finished the iteration it was in, then saved
    assert torch.load(tmp_path / 'cut' / 'ckpt.pt', weights_only=True)['iter_num'] == stopped
    resumed = train(tmp_path, '--out_dir=cut', '--init_from=resume')
    assert resumed.returncode == 0, resumed.stderr
    after = losses(resumed.stdout)
    assert sorted(after) == list(range(stopped + 1, 15)), (k, stopped, resumed.stdout)
    assert after == {i: losses(full.stdout)[i] for i in after}
    assert_same_weights(tmp_path / 'full' / 'ckpt.pt', tmp_path / 'cut' / 'ckpt.pt')


def test_kill_9_campaign_loses_nothing(tmp_path, char_dataset):
    """kill -9 at random moments, each followed by a resume: no checkpoint is ever unloadable, and the
    final weights equal an uninterrupted run's."""
    common = [f'--dataset={char_dataset}', '--max_iters=800', '--eval_interval=20', '--lr_decay_iters=800',
              '--log_interval=100']
    full = train(tmp_path, *common, '--out_dir=full', timeout=600)
    assert full.returncode == 0, full.stderr
    rng, ckpt, progress = random.Random(), tmp_path / 'k' / 'ckpt.pt', []
    for _ in range(6):
        resume = ['--init_from=resume'] if ckpt.exists() else []
        proc = popen_train(tmp_path, *common, '--out_dir=k', *resume)
        for line in proc.stdout:  # past the start-up (~7 s): training, evaluating and saving
            if line.startswith('eval '):
                break
        time.sleep(rng.uniform(0.0, 0.8))  # then a random moment: up to ~80 iterations, evals and saves
        assert proc.poll() is None, "the run finished before its kill: make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if ckpt.exists():
            progress.append(torch.load(ckpt, weights_only=True)['iter_num'])  # loadable after every kill
    assert len(set(progress)) >= 3, progress  # the kills landed at several points of the run
    last = train(tmp_path, *common, '--out_dir=k', '--init_from=resume', timeout=600)
    assert last.returncode == 0, last.stderr
    assert_same_weights(tmp_path / 'full' / 'ckpt.pt', ckpt)
    evals = [json.loads(line)['iter'] for line in open(tmp_path / 'k' / 'eval_log.jsonl')]
    assert evals == list(range(0, 801, 20))  # one line per evaluated iteration, however often resumed


class RunsCode:
    def __reduce__(self):
        return (os.system, ('touch PWNED',))


def test_meta_pkl_cannot_run_code(tmp_path):
    folder = write_char_dataset(str(tmp_path / 'data'), TOY_TEXT)
    with open(os.path.join(folder, 'meta.pkl'), 'wb') as f:
        pickle.dump({'vocab_size': 20, 'stoi': RunsCode(), 'itos': {}}, f)
    assert_one_line_error(train(tmp_path, f'--dataset={folder}', '--out_dir=o'), 'meta.pkl', 'os')
    assert not (tmp_path / 'PWNED').exists() and not (tmp_path / 'o').exists()
    # a plain pickle of nanoGPT's format is read as before (the other tests' datasets), garbage is refused
    (tmp_path / 'data' / 'meta.pkl').write_bytes(os.urandom(64))
    assert_one_line_error(train(tmp_path, f'--dataset={folder}', '--out_dir=o'), 'meta.pkl')
    with open(os.path.join(folder, 'meta.pkl'), 'wb') as f:
        pickle.dump({'vocab_size': 3, 'stoi': {'a': 0}, 'itos': {0: 'a'}}, f)
    assert_one_line_error(train(tmp_path, f'--dataset={folder}', '--out_dir=o'), 'meta.pkl', 'same vocabulary')


def test_resume_takes_the_runs_own_options(run):
    # none of the run's options repeated: batch 4 and its tiny model, not today's defaults
    r = run_script('train.py', '--out_dir=good', '--init_from=resume', '--max_iters=10', '--log_interval=1', cwd=run)
    assert r.returncode == 0, r.stderr
    assert 'tokens per iteration: 128 ' in r.stdout and 'resume: max_iters = 10 (was 8)' in r.stdout
    assert sorted(losses(r.stdout)) == [9, 10]
    ckpt = torch.load(run / 'good' / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['n_layer'] == 1 and ckpt['config']['batch_size'] == 4 and ckpt['iter_num'] == 10
    evals = [json.loads(line)['iter'] for line in open(run / 'good' / 'eval_log.jsonl')]
    assert evals == [0, 4, 8, 10]  # the eval of iteration 8 is not repeated by the resume
    before = digest(run / 'good' / 'ckpt.pt')
    for change in ('--n_layer=2', '--batch_size=8', '--seed=1', '--kind=ar'):
        assert_one_line_error(train(run, '--out_dir=good', '--init_from=resume', change), change.split('=')[0][2:],
                              'would change the model or the data')
    assert digest(run / 'good' / 'ckpt.pt') == before


def test_string_options_stay_strings(run, char_dataset):
    r = train(run, f'--dataset={char_dataset}', '--max_iters=1', '--out_dir=0x10')
    assert r.returncode == 0, r.stderr
    assert (run / '0x10' / 'ckpt.pt').exists() and not (run / '16').exists()
    r = run_script('sample.py', '--out_dir=good', '--out=1e3', '--num_samples=1', '--steps=2', cwd=run)
    assert r.returncode == 0, r.stderr
    assert json.load(open(run / '1e3'))['settings']['out'] == '1e3'
    defaults = {'start': '', 'steps': 0, 'eta': 0.5, 'ema': True}
    assert configure(defaults, ['--start=0x41', '--steps=0x10', '--eta=1', '--ema=False']) == {
        'start': '0x41', 'steps': 16, 'eta': 1.0, 'ema': False}
    assert configure(defaults, ['--start=True', '--start=[1, 2]'])['start'] == '[1, 2]'
    for bad in ('--steps=2.5', '--steps=abc', '--eta=True', '--ema=1'):
        with pytest.raises(SystemExit, match=bad.split('=')[0]):
            configure(defaults, [bad])
    assert int_list('1,2, 8', 'steps') == [1, 2, 8]
    for bad in ('-4', '2.5', '1,,2', '', '0', '²'):
        with pytest.raises(SystemExit, match='whole numbers'):
            int_list(bad, 'steps')


BAD_OPTIONS = [
    (['--n_head=3'], ['n_head', 'n_embd']),
    (['--learning_rate=-1'], ['learning_rate', '> 0']),
    (['--learning_rate=0'], ['learning_rate', '> 0']),
    (['--dropout=2'], ['dropout', '[0, 1)']),
    (['--ema_decay=2'], ['ema_decay', '[0, 1)']),
    (['--n_layer=0'], ['n_layer', '> 0']),
    (['--device=tpu'], ['--device=tpu', 'not available']),
    (['--kind=stage1', '--teacher=notackpt.pt'], ['--teacher', 'not a checkpoint written by train.py']),
    (['--kind=stage1', '--teacher=unsafe.pt'], ['--teacher', 'objects other than tensors']),
]


def test_bad_options_and_files_are_one_line_errors(run, char_dataset):
    torch.save({'weights': torch.zeros(3)}, run / 'notackpt.pt')
    torch.save({'when': datetime.date(2026, 1, 1)}, run / 'unsafe.pt')  # loading it would need pickle's code
    results = train_all(run, *[[f'--dataset={char_dataset}', f'--out_dir=refused{i}', *args]
                               for i, (args, _) in enumerate(BAD_OPTIONS)])
    for i, ((_, words), r) in enumerate(zip(BAD_OPTIONS, results)):
        assert_one_line_error(r, *words)
        assert 'weights_only=False' not in r.stderr  # never suggest the unsafe load
        assert not (run / f'refused{i}').exists()


def test_broken_data_files_are_one_line_errors(tmp_path):
    cases = {'empty': ['train.bin', '0 tokens'], 'odd': ['odd number of bytes'], 'vocab': ['ids up to', 'vocabulary of']}
    for case in cases:
        folder = write_char_dataset(str(tmp_path / case), TOY_TEXT)
        path = os.path.join(folder, 'train.bin')
        if case == 'empty':
            open(path, 'wb').close()
        elif case == 'odd':
            with open(path, 'ab') as f:
                f.write(b'\0')
        else:
            np.array([1, 2, 999] * 100, dtype=np.uint16).tofile(path)
    results = train_all(tmp_path, *[[f'--dataset={tmp_path / case}', f'--out_dir=o-{case}'] for case in cases])
    for (case, words), r in zip(cases.items(), results):
        assert_one_line_error(r, *words)
        assert not (tmp_path / f'o-{case}').exists()


def test_unwritable_places_are_found_before_the_work(run, char_dataset):
    (run / 'afile').write_text('')
    assert_one_line_error(train(run, f'--dataset={char_dataset}', '--out_dir=afile/sub'), 'afile/sub', 'cannot write')
    t0 = time.time()
    assert_one_line_error(run_script('sample.py', '--out_dir=good', '--out=nodir/x.json', '--steps=2000', cwd=run),
                          'nodir')
    assert time.time() - t0 < 60  # refused before 2000 sampler steps
    # a full disk: the checkpoint's temporary file is /dev/full
    os.makedirs(run / 'full_disk')
    os.symlink('/dev/full', run / 'full_disk' / 'ckpt.pt.tmp')
    r = train(run, f'--dataset={char_dataset}', '--out_dir=full_disk', '--max_iters=1')
    assert_one_line_error(r, 'cannot write', 'No space left on device')


@pytest.mark.parametrize("content, words", [
    ({'samples': ['abc'], 'ids': [[1, 2, 3], [1, 2, 3], [1, 2, 3]]}, ['not a samples file']),
    ({'samples': [''], 'ids': [[]]}, ['not a samples file']),
    ({'samples': [], 'ids': []}, ['not a samples file']),
    ([['abc'], [[1, 2, 3]]], ['not a samples file']),
    ({'samples': ['ab', 'abc'], 'ids': [[1, 2], [1, 2, 3]]}, ['not a samples file']),
    ({'samples': [None], 'ids': [None]}, ['not a samples file']),
    ('{not json', ['cannot read samples']),
])
def test_eval_refuses_a_malformed_samples_file(tmp_path, content, words):
    from tools.judge import read_samples  # in-process: eval.py checks every samples file first, with this
    (tmp_path / 'bad.json').write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(SystemExit) as e:
        read_samples(str(tmp_path / 'bad.json'))
    msg = str(e.value)
    assert msg.startswith('error:') and '\n' not in msg and all(w in msg for w in words), msg


def test_eval_judge_paths(run):
    (run / 'x.json').write_text(json.dumps({'samples': ['ab'], 'ids': [[1, 2]]}))
    torch.save({'when': datetime.date(2026, 1, 1)}, run / 'unsafe.pt')
    r = run_script('tools/judge.py', '--samples=x.json', '--judge=unsafe.pt', cwd=run)
    assert_one_line_error(r, 'objects other than tensors')
    assert 'weights_only=False' not in r.stderr
    torch.save({'weights': torch.zeros(3)}, run / 'notackpt.pt')
    assert_one_line_error(run_script('tools/judge.py', '--samples=x.json', '--judge=notackpt.pt', cwd=run), 'not a checkpoint')
    # a mistyped path is not looked up on the hub as a model name
    t0 = time.time()
    assert_one_line_error(run_script('tools/judge.py', '--samples=x.json', '--judge=good/ckpt.ptt', cwd=run), 'no such file')
    assert_one_line_error(run_script('tools/judge.py', '--samples=x.json', '--judge=./gpt2-larg', cwd=run), 'no such file')
    assert time.time() - t0 < 60
