"""Hostile inputs that used to lose data, trace back or answer wrong: sample.py's --out never replaces
a checkpoint, a data file or any file that is not a samples file (unless --force), and is checked
before the sampling; sample.py's other inputs and Ctrl-C; torch files with a checkpoint's keys but
not its parts; a corrupt eval_log.jsonl on resume; prepare scripts that never replace good data with
worse; the judge's samples that disagree with themselves or the judge; the sweep's corrupt index;
config files with errors. Each refusal is one line on stderr with a non-zero exit."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TOY_TEXT, run_scripts, write_char_dataset
from test_scripts import assert_one_line_error, digest, train_all


@pytest.fixture(scope="module")
def runs(tmp_path_factory, char_dataset):
    """A tiny FLM (evals at 0, 2, 4) and a tiny AR judge of the same data, and a copy of the data."""
    cwd = tmp_path_factory.mktemp("hostile")
    common = [f'--dataset={char_dataset}', '--max_iters=4', '--eval_interval=2', '--lr_decay_iters=4']
    for r in train_all(cwd, [*common, '--out_dir=o'], [*common, '--kind=ar', '--out_dir=ar']):
        assert r.returncode == 0, r.stderr
    shutil.copytree(char_dataset, cwd / 'data')
    return cwd


def test_sample_out_replaces_only_samples_files_and_is_checked_before_sampling(runs):
    """Cases 1, 14, 15, 24: the checkpoint read, a data file, another file, a folder, /dev/full;
    and 16, 22, 23: a prompt file that is not UTF-8, a local file for --init_from, an unbounded --steps."""
    cwd = runs
    (cwd / 'notes.txt').write_text('not samples\n')
    (cwd / 'notes2.txt').write_text('not samples either\n')
    (cwd / 'latin1.txt').write_bytes('ROMÉO'.encode('latin-1'))
    os.makedirs(cwd / 'folder', exist_ok=True)
    guarded = [cwd / 'o' / 'ckpt.pt', cwd / 'data' / 'train.bin', cwd / 'notes.txt']
    before = [digest(p) for p in guarded]
    slow = ['--out_dir=o', '--steps=100000', '--num_samples=64']  # minutes of sampling, were it to start
    cases = [
        (['--out_dir=o', '--out=o/ckpt.pt', '--force=True'], ['o/ckpt.pt', 'the checkpoint being sampled']),
        ([*slow, '--out=data/train.bin'], ['data/train.bin', 'not a samples file', '--force']),
        ([*slow, '--out=notes.txt'], ['notes.txt', 'not a samples file', '--force']),
        ([*slow, '--out=folder'], ['folder', 'is a folder']),
        ([*slow, '--out=/dev/full'], ['/dev/full', 'not a samples file']),
        (['--out_dir=o', '--out=/dev/full', '--force=True', '--steps=2', '--num_samples=1'],
         ['/dev/full', 'No space left on device']),
        (['--out_dir=o', '--steps=100000000000000000000'], ['--steps']),
        (['--init_from=o/ckpt.pt'], ['o/ckpt.pt', 'is a file', '--ckpt=o/ckpt.pt']),
        (['--out_dir=o', '--start=FILE:latin1.txt'], ['latin1.txt', 'UTF-8']),
    ]
    t0 = time.time()
    results = run_scripts([('sample.py', *args) for args, _ in cases]
                          + [('sample.py', '--out_dir=o', '--out=notes2.txt', '--force=True', '--steps=2',
                              '--num_samples=1', '--stats=False')], cwd=cwd)
    assert time.time() - t0 < 120  # each refusal came before the sampling
    for (args, words), r in zip(cases, results):
        assert_one_line_error(r, *words)
        assert 'wrote' not in r.stdout, args
    assert [digest(p) for p in guarded] == before  # the bytes of every file not named as output
    forced = results[-1]
    assert forced.returncode == 0, forced.stderr
    assert len(json.load(open(cwd / 'notes2.txt'))['ids']) == 1  # --force replaces it, with samples
    assert not [f for f in os.listdir(cwd) if f.endswith('.tmp')]


def test_ctrl_c_during_sample_is_a_quiet_stop(runs):
    """Case 17: SIGINT at a random moment (importing torch, loading, sampling): one line, no traceback."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'sample.py'), '--out_dir=o', '--steps=100000',
                             '--out=cut.json'], cwd=runs, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    time.sleep(random.uniform(1.0, 3.0))
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert err.strip() == 'stopped by Ctrl-C; no samples file written', err
    assert not (runs / 'cut.json').exists()


def test_a_torch_file_with_a_checkpoints_keys_but_not_its_parts_is_refused(runs):
    """Cases 12 and 13: resume on a real checkpoint without iter_num; sample.py on a dict with the right
    top-level keys and nothing in them. The files are left as they were."""
    os.makedirs(runs / 'hollow', exist_ok=True)
    torch.save({k: {} for k in ('model_args', 'model', 'ema', 'meta', 'config', 'optimizer')},
               runs / 'hollow' / 'ckpt.pt')
    ckpt = torch.load(runs / 'o' / 'ckpt.pt', weights_only=True)
    del ckpt['iter_num']
    os.makedirs(runs / 'no_iter', exist_ok=True)
    torch.save(ckpt, runs / 'no_iter' / 'ckpt.pt')
    before = digest(runs / 'hollow' / 'ckpt.pt'), digest(runs / 'no_iter' / 'ckpt.pt')
    resume, sample = run_scripts([('train.py', '--out_dir=no_iter', '--init_from=resume'),
                                  ('sample.py', '--ckpt=hollow/ckpt.pt')], cwd=runs)
    assert_one_line_error(resume, 'no_iter/ckpt.pt', 'not a checkpoint written by train.py', 'iter_num')
    assert 'tokens per iteration' not in resume.stdout  # refused before the run starts
    assert_one_line_error(sample, 'hollow/ckpt.pt', 'not a checkpoint written by train.py', 'model_args')
    assert (digest(runs / 'hollow' / 'ckpt.pt'), digest(runs / 'no_iter' / 'ckpt.pt')) == before
    # the same checks in-process, for the other parts (a resumed run and sample.py load through here)
    from tools.runs import load_checkpoint
    good = torch.load(runs / 'o' / 'ckpt.pt', weights_only=True)
    for part, value, words in (('model_args', {**good['model_args'], 'n_head': 0}, 'model_args'),
                               ('model', {'w': 1}, "'model'"), ('config', {}, 'dataset'), ('meta', [], "'meta'"),
                               ('rng', None, 'rng')):
        torch.save({**good, part: value}, runs / 'bad.pt')
        with pytest.raises(SystemExit, match=words):
            load_checkpoint(str(runs / 'bad.pt'), 'test', resume=True)


def test_a_corrupt_eval_log_loses_no_training(runs, tmp_path, capsys):
    """Case 3: a corrupt line in eval_log.jsonl, then a resume: a warning, the corrupt lines dropped, the
    good lines kept byte for byte, the training saved. A log that cannot be written (a folder in its
    place) is a warning too (in-process, tools.runs.log_eval)."""
    log = runs / 'o' / 'eval_log.jsonl'
    good = log.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)['iter'] for line in good] == [0, 2, 4]
    log.write_bytes(good[0] + b'{"iter": 1, "val": \n' + b'\xff\xfe not json\n' + good[1] + b'[3]\n' + good[2])
    before = digest(runs / 'o' / 'ckpt.pt')
    [r] = train_all(runs, ['--out_dir=o', '--init_from=resume', '--max_iters=6'])
    assert r.returncode == 0, r.stderr
    assert 'warning:' in r.stderr and 'dropped line(s) 2, 3, 5' in r.stderr and 'Traceback' not in r.stderr
    after = log.read_bytes().splitlines(keepends=True)
    assert after[:3] == good and len(after) == 4 and json.loads(after[3])['iter'] == 6
    assert digest(runs / 'o' / 'ckpt.pt') != before
    assert torch.load(runs / 'o' / 'ckpt.pt', weights_only=True)['iter_num'] == 6
    from tools.runs import log_eval
    os.makedirs(tmp_path / 'eval_log.jsonl')
    log_eval(str(tmp_path), 8, 'flm', {'val': {'ce': 1.0}})
    assert 'warning:' in capsys.readouterr().err and (tmp_path / 'eval_log.jsonl').is_dir()


def test_prepare_scripts_never_replace_good_data_with_worse(tmp_path):
    """Cases 2, 18, 19: the BPE script with an empty and with a non-UTF-8 input.txt, the character
    script with --out_dir=FILE. The data already there keeps its bytes."""
    inputs = {'empty': (b'', ['0 characters', 'nothing written']), 'latin1': ('Roméo\n'.encode('latin-1') * 9, ['UTF-8'])}
    for case, (content, _) in inputs.items():  # a copy of the script beside its own data, with what it imports
        folder = tmp_path / case / 'data' / 'shakespeare'
        write_char_dataset(str(folder), TOY_TEXT)
        os.remove(folder / 'meta.pkl')
        shutil.copy(os.path.join(ROOT, 'data', 'shakespeare', 'prepare.py'), folder / 'prepare.py')
        for module in ('dataset.py', 'configurator.py'):
            shutil.copy(os.path.join(ROOT, module), tmp_path / case / module)
        (folder / 'input.txt').write_bytes(content)
    before = {case: {f: digest(tmp_path / case / 'data' / 'shakespeare' / f) for f in ('train.bin', 'val.bin')}
              for case in inputs}
    (tmp_path / 'afile').write_text('')
    (tmp_path / 'in.txt').write_text(TOY_TEXT)
    results = run_scripts([(str(tmp_path / case / 'data' / 'shakespeare' / 'prepare.py'),) for case in inputs]
                          + [('data/shakespeare_char/prepare.py', '--input=in.txt', '--out_dir=afile')], cwd=tmp_path)
    for (case, (_, words)), r in zip(inputs.items(), results):
        folder = tmp_path / case / 'data' / 'shakespeare'
        assert_one_line_error(r, 'input.txt', *words)
        assert {f: digest(folder / f) for f in before[case]} == before[case]
        assert sorted(os.listdir(folder)) == ['input.txt', 'prepare.py', 'train.bin', 'val.bin']
    assert_one_line_error(results[-1], '--out_dir=afile', 'not a folder')
    assert (tmp_path / 'afile').read_text() == ''


def test_the_judge_refuses_samples_that_disagree_with_themselves_or_the_judge(runs):
    """Cases 6-9 with a character judge: ids beyond its vocabulary, texts and ids that disagree, an
    empty text, texts of unequal length; good samples are judged."""
    from tools.judge import judge_samples, load_judge, read_samples
    judge = load_judge(str(runs / 'ar' / 'ckpt.pt'), 'cpu')
    itos = torch.load(runs / 'ar' / 'ckpt.pt', weights_only=True)['meta']['itos']
    K = len(itos)
    ids = [[1, 2, 3, 4], [4, 3, 2, 1]]
    texts = [''.join(itos[i] for i in s) for s in ids]
    assert judge_samples(judge, texts, ids)['gen_ppl'] > 1
    cases = {
        'ids beyond': (texts, [[1, 2, 3, K], ids[1]], ["outside the judge's vocabulary"]),
        'disagree': (texts[::-1], ids, ['sample 0', 'texts and ids disagree']),
        'empty': (['', texts[1]], ids, ['sample 0', 'empty text']),
        'unequal': ([texts[0] + texts[0][0], texts[1]], ids, ['sample 0', '5 characters', '4 ids']),
    }
    for case, (t, i, words) in cases.items():
        with pytest.raises(SystemExit) as e:
            judge_samples(judge, t, i)
        msg = str(e.value)
        assert msg.startswith('error:') and '\n' not in msg and all(w in msg for w in words), (case, msg)
    # an empty text is refused already when the samples file is read, before the judge is loaded
    (runs / 'empty.json').write_text(json.dumps({'samples': ['', 'ab'], 'ids': [[1, 2], [1, 2]]}))
    with pytest.raises(SystemExit, match='sample 0 is an empty text'):
        read_samples(str(runs / 'empty.json'))


def test_sweep_rebuilds_a_corrupt_index(runs, tmp_path, capsys):
    """Cases 10 and 11: samples/index.json that is not JSON (a sweep end to end), or not a dict, or with an
    entry that is not a record (in-process, tools.runs.read_index): a warning, rebuilt."""
    from tools.runs import read_index
    for content, kept in (('[1, 2]', {}), ('{"a": {"args": [], "ckpt_mtime": 1}, "b": 3}', {'a'})):
        (tmp_path / 'index.json').write_text(content)
        assert set(read_index(str(tmp_path / 'index.json'), ('args', 'ckpt_mtime'))) == set(kept)
        assert 'warning:' in capsys.readouterr().err
    os.makedirs(runs / 'sw' / 'samples')
    (runs / 'sw' / 'samples' / 'index.json').write_text('{"flm-1": {"args": [tru')
    [r] = run_scripts([('tools/sweep.py', '--judge=ar/ckpt.pt', '--ar_ckpt=', '--mdlm_ckpt=', '--flm_ckpt=o/ckpt.pt',
                        '--fmlm_ckpt=', '--flm_steps=1', '--num_samples=2', '--batch_size=2', '--out_dir=sw')], cwd=runs)
    assert r.returncode == 0, r.stderr
    assert 'warning:' in r.stderr and 'index.json' in r.stderr and 'Traceback' not in r.stderr
    assert list(json.load(open(runs / 'sw' / 'samples' / 'index.json'))) == ['flm-1']
    assert '| FLM | 1 | 1 |' in (runs / 'sw' / 'sweep.md').read_text()


def test_a_config_file_with_an_error_is_one_line_naming_file_and_line(tmp_path):
    """Case 21 (in-process: configurator.configure reads the config files of every script)."""
    from configurator import configure
    cases = {'syntax.py': (b'batch_size = 4\nn_layer = (\n', 'line 2'),
             'raises.py': (b'batch_size = 4\n\nn_layer = 1 // 0\n', 'line 3: ZeroDivisionError'),
             'latin1.py': ('start = "Roméo"\n'.encode('latin-1'), 'cannot read')}
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SystemExit) as e:
            configure({'batch_size': 1, 'n_layer': 2, 'start': ''}, [str(tmp_path / name)])
        msg = str(e.value)
        assert msg.startswith(f'error: config file {tmp_path / name}') and words in msg and '\n' not in msg, msg
    (tmp_path / 'good.py').write_text('batch_size = 4\n_private = 1\n')
    assert configure({'batch_size': 1}, [str(tmp_path / 'good.py')]) == {'batch_size': 4}


def test_a_released_checkpoints_config_with_zero_heads_is_refused(tmp_path):
    """Case 20: config.json with n_heads 0, read in-process as sample.py --init_from=FOLDER reads it."""
    pytest.importorskip("safetensors")
    from tools import pretrained
    folder = tmp_path / 'release'
    shutil.copytree(os.path.join(ROOT, 'tests', 'fixtures', 'paper_flm'), folder)
    config = json.load(open(folder / 'config.json'))
    config['model']['n_heads'] = 0
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(SystemExit) as e:
        pretrained.load_pretrained(str(folder))
    assert 'n_head=0' in str(e.value) and '\n' not in str(e.value)
