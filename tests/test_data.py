"""The prepare scripts: any text file as a character dataset (data/shakespeare_char/prepare.py
--input), tiny Shakespeare as GPT-2 BPE (data/shakespeare/prepare.py, offline from input.txt);
each read back through dataset.py and trained on for an iteration."""
import json
import os
import pickle
import re

import numpy as np
import pytest

import dataset as data
from conftest import ROOT, run_script
from test_scripts import assert_one_line_error, train


def test_any_text_file_becomes_a_character_dataset(tmp_path):
    text = "hello world, hello flows.\n" * 50
    (tmp_path / 'my.txt').write_text(text, encoding='utf-8')
    r = run_script('data/shakespeare_char/prepare.py', '--input=my.txt', '--out_dir=my_char', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    meta = data.read_meta(str(tmp_path / 'my_char'))
    encode, decode = data.codec(meta)
    ids = np.concatenate([data.split(str(tmp_path / 'my_char'), s) for s in ('train', 'val')]).tolist()
    assert decode(ids) == text and meta['vocab_size'] == len(set(text))
    with open(tmp_path / 'my_char' / 'meta.pkl', 'rb') as f:
        assert pickle.load(f)['stoi'] == meta['stoi']  # nanoGPT's format
    r = train(tmp_path, '--dataset=my_char', '--max_iters=1', '--out_dir=o')
    assert r.returncode == 0, r.stderr
    assert_one_line_error(run_script('data/shakespeare_char/prepare.py', '--input=nothing.txt', cwd=tmp_path),
                          'nothing.txt')
    assert_one_line_error(run_script('data/shakespeare_char/prepare.py', '--inptu=my.txt', cwd=tmp_path), '--input')


def test_shakespeare_as_gpt2_bpe(tmp_path):
    """The prepare script, then on a small network and block every script on GPT-2 BPE: the FLM preset,
    its default distillation, an AR judge, sample.py's figures of the decoded text, eval.py."""
    if not os.path.exists(os.path.join(ROOT, 'data', 'shakespeare_char', 'input.txt')):
        pytest.skip("tiny Shakespeare's input.txt is not here (CI copies it)")
    r = run_script('data/shakespeare/prepare.py', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    folder = data.folder('shakespeare')
    meta = data.read_meta(folder)
    assert meta == data.GPT2  # no meta.pkl: GPT-2 BPE
    text = open(os.path.join(ROOT, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8').read()
    _, decode = data.codec(meta)
    assert text.startswith(decode(data.split(folder, 'train')[:200].tolist()))
    small = ['--max_iters=2', '--eval_interval=2', '--eval_iters=1', '--batch_size=2', '--block_size=16',
             '--n_layer=1', '--n_embd=32', '--n_cond=16']
    preset = lambda name: os.path.join(ROOT, 'config', name)
    r = run_script('train.py', preset('train_shakespeare_bpe.py'), *small, '--out_dir=bpe', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'tokens per iteration: 32 ' in r.stdout and 'context gain' in r.stdout
    r = run_script('train.py', preset('distill_shakespeare_bpe.py'), '--teacher=bpe/ckpt.pt', *small[:5],
                   '--eval_samples=2', '--eval_ref_steps=2', '--out_dir=fm', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"eval 2: 1 step: valid words [0-9.]+%, entropy", r.stdout)
    r = run_script('train.py', preset('train_shakespeare_bpe.py'), *small, '--kind=ar', '--out_dir=judge', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_script('sample.py', '--out_dir=fm', '--num_samples=3', '--out=fm.json', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # the figures of the decoded text: real BPE Shakespeare has most of its words in the training text
    real = float(re.search(r"valid words [0-9.]+% \(real text ([0-9.]+)%\)", r.stdout).group(1))
    assert real > 80
    samples = json.load(open(tmp_path / 'fm.json'))
    assert samples['samples'] == [decode(ids) for ids in samples['ids']]
    r = run_script('tools/judge.py', '--samples=fm.json', '--judge=judge/ckpt.pt', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"Gen PPL [0-9.]+, entropy [0-9.]+ \(characters\), token entropy [0-9.]+", r.stdout)
