"""train.py, sample.py and plot_eval.py end to end, in a temp dir, on a tiny character dataset:
logs, checkpoints and eval_log.jsonl; a resumed run continues with the same losses; samples keep
their prompt, and the same seed gives the same samples; bad options and corrupt checkpoints are
one-line errors that leave the checkpoint untouched; DDP with two CPU processes (the ranks agree);
both distillation stages and the one-network flow map (--kind=flowmap) train, log, resume exactly and
sample with their kind's defaults, and a wrong teacher or stage-1 checkpoint is refused before any
training."""
import hashlib
import json
import os
import re
import shutil
import sys

import pytest
import torch

from conftest import run_script, run_scripts

TINY = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--n_cond=16', '--block_size=32', '--batch_size=4',
        '--eval_iters=1', '--eval_sample_steps=2', '--log_interval=1', '--dropout=0.1', '--warmup_iters=2']


def train(cwd, *args, **kw):
    return run_script('train.py', *TINY, *args, cwd=cwd, **kw)


def train_all(cwd, *arg_lists):
    """train.py runs two at a time (one thread each), for runs that do not depend on each other."""
    return run_scripts([('train.py', *TINY, *args) for args in arg_lists], cwd=cwd)


def losses(stdout):
    return {int(i): l for i, l in re.findall(r"^iter (\d+): loss (-?[0-9.]+)", stdout, re.M)}


def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, char_dataset):
    """An uninterrupted 8-iteration run, and one stopped at 4 and resumed to 8."""
    cwd = tmp_path_factory.mktemp("run")
    common = [f'--dataset={char_dataset}', '--eval_interval=4', '--lr_decay_iters=8']
    full, first = train_all(cwd, [*common, '--max_iters=8', '--out_dir=full'],
                            [*common, '--max_iters=4', '--out_dir=split'])
    [resumed] = train_all(cwd, [*common, '--max_iters=8', '--out_dir=split', '--init_from=resume'])
    for r in (full, first, resumed):
        assert r.returncode == 0, r.stderr
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


def test_eval_only_evaluates_a_checkpoint_as_its_run_did(trained):
    cwd, full, _, _ = trained
    before = digest(cwd / 'full' / 'ckpt.pt'), (cwd / 'full' / 'eval_log.jsonl').read_text()
    [r] = train_all(cwd, ['--out_dir=full', '--init_from=resume', '--eval_only=True'])  # one thread, as the run
    assert r.returncode == 0, r.stderr
    # the same fixed batches and noise: the run's own line at iteration 8, and nothing written
    line = lambda out: re.search(r"^eval 8: .*$", out, re.M).group(0)
    assert line(r.stdout) == line(full.stdout)
    assert (digest(cwd / 'full' / 'ckpt.pt'), (cwd / 'full' / 'eval_log.jsonl').read_text()) == before
    assert not losses(r.stdout)


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
    command = ' '.join(r.args[1:]) if isinstance(r.args, list) else r.args
    assert r.returncode != 0, command
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:'), (command, r.stderr)
    for w in words:
        assert w in lines[0], (command, lines[0])


TRAIN_BAD_INPUT = [
    (['--dataset=no_such_dataset'], ['no_such_dataset', 'prepare']),
    (['--no_such_key=3'], ['no_such_key', 'batch_size', 'learning_rate']),
    (['--batch_size=abc'], ['batch_size', 'int']),
    (['--learning_rate=True'], ['learning_rate', 'float']),
    (['--max_iters=0'], ['max_iters']),
    (['--init_from=pretrained'], ['init_from']),
]


def test_train_bad_input(trained):
    cwd, *_ = trained
    before = digest(cwd / 'full' / 'ckpt.pt')
    results = train_all(cwd, *[['--out_dir=full', *args] for args, _ in TRAIN_BAD_INPUT])
    for (_, words), r in zip(TRAIN_BAD_INPUT, results):
        assert_one_line_error(r, *words)
    assert digest(cwd / 'full' / 'ckpt.pt') == before


SAMPLE_BAD_INPUT = [
    (['--steps=-1'], ['steps']),
    (['--eta=1.5'], ['eta']),
    (['--start=the cat\u00e9\u00df'], ['vocabulary']),
    (['--start=' + 'the cat ' * 5], ['longer than the block']),
    (['--out_dir=nowhere'], ['no checkpoint', 'nowhere']),
    (['--stepz=3'], ['stepz', 'steps']),
]


def test_sample_bad_input(trained):
    cwd, *_ = trained
    before = digest(cwd / 'full' / 'ckpt.pt')
    results = run_scripts([('sample.py', '--out_dir=full', *args) for args, _ in SAMPLE_BAD_INPUT], cwd=cwd)
    for (_, words), r in zip(SAMPLE_BAD_INPUT, results):
        assert_one_line_error(r, *words)
    assert digest(cwd / 'full' / 'ckpt.pt') == before


def test_corrupt_checkpoint(trained, char_dataset):
    cwd, *_ = trained
    os.makedirs(cwd / 'bad', exist_ok=True)
    (cwd / 'bad' / 'ckpt.pt').write_bytes(b'not a checkpoint')
    assert_one_line_error(run_script('sample.py', '--out_dir=bad', cwd=cwd), 'cannot load')
    r = train(cwd, f'--dataset={char_dataset}', '--out_dir=bad', '--init_from=resume')
    assert_one_line_error(r, 'cannot load')
    assert (cwd / 'bad' / 'ckpt.pt').read_bytes() == b'not a checkpoint'
    assert_one_line_error(train(cwd, f'--dataset={char_dataset}', '--out_dir=empty', '--init_from=resume'),
                          'no checkpoint')


def test_ddp_two_processes_on_cpu(tmp_path, char_dataset):
    r = train(tmp_path, f'--dataset={char_dataset}', '--max_iters=4', '--eval_interval=2', '--out_dir=ddp',
              '--device=cpu', '--gradient_accumulation_steps=2',
              launcher=[sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'],
              env={'OMP_NUM_THREADS': '1'})
    # on failure, show what the ranks said (torchrun's summary at the end names only the signals)
    assert r.returncode == 0, '\n'.join(line for line in r.stderr.splitlines() if 'Warning' not in line)[:6000]
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


# -----------------------------------------------------------------------------
# flow-map distillation (both stages, and the one-network flow map) from the tiny FLM above

DISTILL = ['--eval_interval=2', '--eval_samples=4', '--eval_ref_steps=4', '--max_iters=4', '--lr_decay_iters=4']


@pytest.fixture(scope="module")
def distilled(trained, char_dataset):
    """Stage 1, stage 2 and flowmap from full/ckpt.pt, each run 4 iterations straight and 2 + 2 resumed."""
    cwd, *_ = trained
    common = [f'--dataset={char_dataset}', *DISTILL]
    waves = [{  # each wave needs the one before
        's1': [*common, '--kind=stage1', '--teacher=full/ckpt.pt', '--out_dir=fm1'],
        's1_first': [*common, '--kind=stage1', '--teacher=full/ckpt.pt', '--out_dir=fm1_split', '--max_iters=2'],
        'fm': [*common, '--kind=flowmap', '--teacher=full/ckpt.pt', '--out_dir=fm'],
        'fm_first': [*common, '--kind=flowmap', '--teacher=full/ckpt.pt', '--out_dir=fm_split', '--max_iters=2'],
    }, {
        # a resumed run takes its options from its checkpoint; stage 1 reads its teacher from there too
        's1_resumed': ['--out_dir=fm1_split', '--init_from=resume', '--max_iters=4'],
        's2': [*common, '--kind=stage2', '--stage1=fm1/ckpt.pt', '--out_dir=fm2'],
        's2_first': [*common, '--kind=stage2', '--stage1=fm1/ckpt.pt', '--out_dir=fm2_split', '--max_iters=2'],
        # its checkpoint carries no teacher: a resumed flowmap reads --teacher again, from its config
        'fm_resumed': ['--out_dir=fm_split', '--init_from=resume', '--max_iters=4'],
    }, {
        # a resumed stage 2 finds its stage-1 checkpoint where it was
        's2_resumed': ['--out_dir=fm2_split', '--init_from=resume', '--max_iters=4'],
    }]
    runs = {}
    for wave in waves:
        runs.update(zip(wave, train_all(cwd, *wave.values())))
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stderr[-3000:])
    return cwd, runs


def test_distillation_logs_checkpoints_and_resumes_exactly(distilled):
    cwd, runs = distilled
    for run, folder, kind in (('s1', 'fm1', 'stage1'), ('s2', 'fm2', 'stage2'), ('fm', 'fm', 'flowmap')):
        out = runs[run].stdout
        assert sorted(losses(out)) == [1, 2, 3, 4]
        assert re.search(r"eval 2: 1 step: valid words [0-9.]+%, entropy [0-9.]+, agreement [0-9.]+% \| 4 step: "
                         r".* \| FLM at 4 steps: valid words", out), out
        after = losses(runs[run + '_resumed'].stdout)
        assert sorted(after) == [3, 4] and after == {i: losses(out)[i] for i in (3, 4)}
        ckpt = torch.load(cwd / folder / 'ckpt.pt', weights_only=True)
        assert ckpt['kind'] == kind and ckpt['model_args']['two_times']
        # the learnable loss weighting by default: stage 1 only
        assert ckpt['config']['loss_weighting'] == (kind == 'stage1')
        evals = [json.loads(line) for line in open(cwd / folder / 'eval_log.jsonl')]
        assert [e['iter'] for e in evals] == [0, 2, 4] and all(e['kind'] == kind for e in evals)
    fm1 = torch.load(cwd / 'fm1' / 'ckpt.pt', weights_only=True)
    teacher = torch.load(cwd / 'full' / 'ckpt.pt', weights_only=True)
    # stage 1 carries its teacher's EMA weights (its sampler and stage 2 need them); stage 2 names stage 1
    assert all(torch.equal(fm1['teacher_weights'][k], teacher['ema'][k]) for k in teacher['ema'])
    assert fm1['teacher_args'] == teacher['model_args']
    fm2 = torch.load(cwd / 'fm2' / 'ckpt.pt', weights_only=True)
    assert fm2['config']['stage1'] == 'fm1/ckpt.pt' and 'teacher_weights' not in fm2
    fm = torch.load(cwd / 'fm' / 'ckpt.pt', weights_only=True)  # flowmap names its teacher, carries none
    assert fm['config']['teacher'] == 'full/ckpt.pt' and 'teacher_weights' not in fm
    assert fm['config']['boundary_every'] == 0 and fm['config']['diagonal_share'] == 0.5  # the kind's defaults
    r = run_script('tools/plot_eval.py', '--out_dir=fm2', '--png=fm2.png', cwd=cwd)
    assert r.returncode == 0 and os.path.getsize(cwd / 'fm2.png') > 0, r.stderr


def test_sample_takes_the_kind_and_its_default_steps_and_keeps_a_prompt(distilled):
    cwd, _ = distilled
    defaults = (('fm2', 'stage2', 1), ('fm1', 'stage1', 1), ('fm', 'flowmap', 1), ('full', 'flm', 64))
    prompted = ('fm1', 'fm2', 'fm')
    *results, refused = run_scripts(
        [('sample.py', f'--out_dir={folder}', '--num_samples=2', f'--out=k-{folder}.json') for folder, *_ in defaults]
        + [('sample.py', f'--out_dir={folder}', '--steps=4', '--num_samples=3', '--start=the cat', f'--out=p-{folder}.json')
           for folder in prompted]
        + [('sample.py', '--out_dir=fm1', '--eta=0.5')], cwd=cwd)
    for r in results:
        assert r.returncode == 0, r.stderr
    for folder, kind, steps in defaults:
        settings = json.load(open(cwd / f'k-{folder}.json'))['settings']
        assert (settings['kind'], settings['steps']) == (kind, steps)  # the kind's default step count
    for folder, r in zip(prompted, results[len(defaults):]):
        assert "4 steps" in r.stdout
        samples = json.load(open(cwd / f'p-{folder}.json'))['samples']
        assert all(s.startswith('the cat') and len(s) == 32 for s in samples)
    assert_one_line_error(refused, 'eta', 'stage-1')


WRONG_TEACHERS = [
    (['--kind=stage1'], ['needs --teacher']),
    (['--kind=stage3'], ['--kind', 'stage1', 'stage2']),
    (['--kind=stage1', '--teacher=nowhere/ckpt.pt'], ['--teacher', 'no checkpoint']),
    (['--kind=stage1', '--teacher=fm1/ckpt.pt'], ["'stage1' checkpoint", "'flm'"]),
    (['--kind=stage1', '--teacher=full/ckpt.pt', '--block_size=16'], ['block_size=32', '16']),
    (['--kind=stage2'], ['needs --stage1']),
    (['--kind=stage2', '--stage1=full/ckpt.pt', '--teacher=full/ckpt.pt'], ['--teacher goes with --kind=stage1']),
    (['--kind=stage2', '--stage1=full/ckpt.pt'], ["'flm' checkpoint", '--stage1']),
    (['--kind=stage2', '--stage1=fm2/ckpt.pt'], ["'stage2' checkpoint", '--stage1']),
    (['--kind=flowmap'], ['--kind=flowmap needs --teacher']),
    (['--kind=flowmap', '--teacher=fm1/ckpt.pt'], ["'stage1' checkpoint", "'flm'"]),
    (['--kind=flowmap', '--teacher=full/ckpt.pt', '--stage1=fm1/ckpt.pt'], ['--stage1 with --kind=stage2']),
    (['--kind=flowmap', '--teacher=full/ckpt.pt', '--diagonal_share=1.5'], ['--diagonal_share', 'in [0, 1]']),
    (['--kind=stage1', '--teacher=full/ckpt.pt', '--ema_targets=True'], ['--ema_targets', '--kind=flowmap']),
    (['--kind=stage1', '--teacher=full/ckpt.pt', 'VOCAB'], ['vocab_size=', 'this run has 4']),
    (['--kind=flowmap', '--teacher=full/ckpt.pt', '--n_layer=2'], ['--n_layer=2', "its teacher's (n_layer=1)"]),
    (['--kind=stage1', '--teacher=full/ckpt.pt', '--dropout=0.2'], ['--dropout=0.2', "its teacher's (dropout=0.1)"]),
]


def test_distillation_refuses_a_wrong_teacher(distilled, char_dataset):
    cwd, _ = distilled
    from conftest import write_char_dataset
    other_vocabulary = write_char_dataset(str(cwd / 'abc'), 'abc ' * 200)
    arg_lists = [args[:-1] + [f'--dataset={other_vocabulary}'] if args[-1] == 'VOCAB'
                 else [f'--dataset={char_dataset}', *args] for args, _ in WRONG_TEACHERS]
    results = train_all(cwd, *[[*args, f'--out_dir=refused{i}'] for i, args in enumerate(arg_lists)])
    for i, ((_, words), r) in enumerate(zip(WRONG_TEACHERS, results)):
        assert_one_line_error(r, *words)
        assert not os.path.exists(cwd / f'refused{i}')  # refused before any training
