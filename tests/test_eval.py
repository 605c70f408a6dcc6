"""The baselines through train.py and sample.py, the judges, the NFE sweep and bench.py, end to end on a
tiny character dataset: Gen PPL against the judge's NLL computed by hand (an AR checkpoint) and against
the reference metric's figures (a tiny random GPT-2 of transformers), samples files and options checked,
a sweep that writes its table and plot and reuses its samples, a bench that times every method."""
import json
import math
import os
import re

import pytest
import torch

from tools import baselines
import flm
from conftest import run_script
from test_scripts import assert_one_line_error, losses, train_all


@pytest.fixture(scope="module")
def runs(tmp_path_factory, char_dataset):
    """Tiny AR and MDLM runs (MDLM stopped at 4 and resumed to 8), and a tiny FLM."""
    cwd = tmp_path_factory.mktemp("baselines")
    common = [f'--dataset={char_dataset}', '--eval_interval=4', '--lr_decay_iters=8']
    first = {'ar': ['--kind=ar', '--max_iters=8'], 'mdlm': ['--kind=mdlm', '--max_iters=8'],
             'mdlm-split': ['--kind=mdlm', '--max_iters=4'], 'flm': ['--max_iters=4']}
    out = dict(zip(first, train_all(cwd, *[[*common, *args, f'--out_dir={name}'] for name, args in first.items()])))
    [out['mdlm-resumed']] = train_all(cwd, [*common, '--kind=mdlm', '--max_iters=8', '--out_dir=mdlm-split',
                                            '--init_from=resume'])
    for name, r in out.items():
        assert r.returncode == 0, (name, r.stderr)
    return cwd, out


def test_baselines_train_and_log_and_a_resumed_mdlm_run_continues_exactly(runs):
    cwd, out = runs
    assert re.search(r"eval 8: train nll [0-9.]+, val nll [0-9.]+ \(ppl [0-9.]+\), context gain", out['ar'].stdout)
    assert re.search(r"eval 8: train ce [0-9.]+, val ce [0-9.]+ \(masked share=0.1:", out['mdlm'].stdout)
    for name, kind in (('ar', 'ar'), ('mdlm', 'mdlm')):
        assert sorted(losses(out[name].stdout)) == list(range(1, 9))
        ckpt = torch.load(cwd / name / 'ckpt.pt', weights_only=True)
        assert ckpt['kind'] == kind and ckpt['iter_num'] == 8
    # the same budget options as an FLM, and a resumed run continues exactly
    full, resumed = losses(out['mdlm'].stdout), losses(out['mdlm-resumed'].stdout)
    assert sorted(resumed) == [5, 6, 7, 8] and resumed == {i: full[i] for i in (5, 6, 7, 8)}


def test_train_refuses_a_bad_model(runs, char_dataset):
    cwd, _ = runs
    cases = [(['--kind=gpt'], ['--kind', 'flm', 'stage1', 'ar', 'mdlm']),
             (['--kind=ar', '--teacher=flm/ckpt.pt'], ['--teacher', 'stage1', 'ar'])]
    results = train_all(cwd, *[[f'--dataset={char_dataset}', '--out_dir=never', *args] for args, _ in cases])
    for (_, words), r in zip(cases, results):
        assert_one_line_error(r, *words)
    assert not os.path.exists(cwd / 'never')


def test_sample_baselines_to_json(runs):
    cwd, _ = runs
    r = run_script('sample.py', '--out_dir=ar', '--num_samples=3', '--start=the cat', '--steps=9', '--out=ar.json',
                   cwd=cwd)
    assert r.returncode == 0, r.stderr
    out = json.load(open(cwd / 'ar.json'))
    assert out['settings']['kind'] == 'ar' and out['settings']['steps'] == 32  # --steps does not apply: L passes
    assert all(s.startswith('the cat') and len(s) == 32 for s in out['samples'])
    assert len(out['ids']) == 3 and all(len(i) == 32 for i in out['ids'])
    r = run_script('sample.py', '--out_dir=mdlm', '--num_samples=3', '--start=the cat', '--steps=5', '--out=m.json',
                   cwd=cwd)
    assert r.returncode == 0, r.stderr
    out = json.load(open(cwd / 'm.json'))
    assert out['settings']['kind'] == 'mdlm' and out['settings']['steps'] == 5
    assert all(s.startswith('the cat') for s in out['samples']) and out['seconds_per_sample'] > 0
    assert_one_line_error(run_script('sample.py', '--out_dir=mdlm', '--eta=0.5', cwd=cwd), 'eta', 'mdlm')


def test_gen_ppl_is_exp_of_the_mean_nll_under_the_judge(runs):
    """eval.py's Gen PPL of a samples file against the judge's NLL computed by hand, one
    prefix at a time (no shifted-input trick, no cache)."""
    cwd, _ = runs
    assert run_script('sample.py', '--out_dir=mdlm', '--num_samples=5', '--steps=4', '--out=m5.json',
                      cwd=cwd).returncode == 0
    r = run_script('tools/judge.py', '--samples=m5.json', '--judge=ar/ckpt.pt', cwd=cwd)
    assert r.returncode == 0, r.stderr
    printed = float(re.search(r"Gen PPL ([0-9.]+), entropy ([0-9.]+)", r.stdout).group(1))
    ckpt = torch.load(cwd / 'ar' / 'ckpt.pt', weights_only=True)
    judge = baselines.Baseline(flm.FLMConfig(**ckpt['model_args']), 'ar').double().eval()
    judge.load_state_dict(ckpt['ema'])
    K, stoi = judge.cfg.vocab_size, ckpt['meta']['stoi']
    nll = []
    with torch.no_grad():
        for text in json.load(open(cwd / 'm5.json'))['samples']:
            ids = [stoi[c] for c in text]
            for i in range(len(ids)):
                logp = torch.log_softmax(judge(torch.tensor([[K] + ids[:i]]))[0, -1], -1)
                nll.append(-logp[ids[i]].item())
    assert printed == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-4)


def test_gpt2_judge(tmp_path):
    """tools/judge.py with a GPT-2 judge (transformers; the tiny random one of tests/fixtures/gen_ppl) on samples
    files of GPT-2 and BERT ids: the paper's Gen PPL and, first, the entropy of the token ids, as the
    reference's metric code gave them (test_gen_ppl.py checks the protocol in process)."""
    pytest.importorskip("transformers")  # optional for users; CI installs it
    gen_ppl = pytest.importorskip("test_gen_ppl")
    gen_ppl.save_judge(str(tmp_path / 'tiny-gpt2'))
    for name, tokenizer in gen_ppl.TOKENIZER.items():
        ref = gen_ppl.REF[name]
        (tmp_path / f'{name}.json').write_text(json.dumps({'samples': ref['texts'], 'ids': ref['ids'],
                                                           'settings': {'tokenizer': tokenizer}}))
    r = run_script('tools/judge.py', '--samples=owt.json,lm1b.json', '--judge=tiny-gpt2', '--judge_batch=2', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    printed = re.findall(r"Gen PPL ([0-9.]+), entropy ([0-9.]+) \(token ids\)", r.stdout)
    for (ppl, entropy), name in zip(printed, ['owt', 'lm1b'], strict=True):
        assert float(ppl) == pytest.approx(gen_ppl.REF[name]['gen_ppl'], rel=1e-5)
        assert float(entropy) == pytest.approx(gen_ppl.REF[name]['entropy'], abs=1e-3)


def test_gpt2_judge_without_transformers_is_a_clear_error(tmp_path):
    fake = tmp_path / 'site' / 'transformers'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text("raise ImportError('not installed')\n")
    (tmp_path / 's.json').write_text(json.dumps({'samples': ['ab'], 'ids': [[1, 2]]}))
    r = run_script('tools/judge.py', '--samples=s.json', '--judge=gpt2-large', cwd=tmp_path,
                   env={'PYTHONPATH': str(tmp_path / 'site')})
    assert_one_line_error(r, 'transformers', 'pip install')


def test_eval_bad_input(runs):
    cwd, _ = runs
    assert_one_line_error(run_script('tools/judge.py', '--samples=m.json', cwd=cwd), '--judge')
    assert_one_line_error(run_script('tools/judge.py', '--samples=m.json', '--judge=mdlm/ckpt.pt', cwd=cwd), 'AR', 'mdlm')
    assert_one_line_error(run_script('tools/judge.py', '--samples=nothing.json', '--judge=ar/ckpt.pt', cwd=cwd), 'nothing.json')
    assert_one_line_error(run_script('tools/sweep.py', '--judge=ar/ckpt.pt', '--ar_ckpt=ar/ckpt.pt',
                                     '--mdlm_ckpt=', '--flm_ckpt=', '--fmlm_ckpt=fm/ckpt.pt', cwd=cwd), 'FMLM', 'fm/ckpt.pt')
    # step lists are parsed strictly (configurator.int_list, tested in test_reliability.py)
    assert_one_line_error(run_script('tools/sweep.py', '--judge=ar/ckpt.pt', '--ar_ckpt=', '--mdlm_ckpt=',
                                     '--flm_ckpt=flm/ckpt.pt', '--fmlm_ckpt=', '--flm_steps=-4', cwd=cwd), 'flm_steps')
    assert_one_line_error(run_script('tools/sweep.py', '--judge=ar/ckpt.pt', '--flm_eta=0,2', cwd=cwd), 'flm_eta')


def test_sweep_writes_table_and_plot_and_reuses_samples(runs):
    cwd, _ = runs
    args = ['--judge=ar/ckpt.pt', '--out_dir=sw', '--ar_ckpt=ar/ckpt.pt', '--mdlm_ckpt=mdlm/ckpt.pt',
            '--flm_ckpt=flm/ckpt.pt', '--fmlm_ckpt=', '--flm_steps=2', '--mdlm_steps=2', '--num_samples=4',
            '--batch_size=2', '--flm_eta=0,1', '--latency=True']
    r = run_script('tools/sweep.py', *args, cwd=cwd)
    assert r.returncode == 0, r.stderr
    table = (cwd / 'sw' / 'sweep.md').read_text()
    for row in ('| AR | - | 32 |', '| MDLM | 2 | 2 |', '| FLM eta 0 | 2 | 2 |', '| FLM eta 1 | 2 | 2 |', '| real text |',
                's per sample, batch 1 |'):
        assert row in table, table
    assert (cwd / 'sw' / 'sweep.png').stat().st_size > 0
    rows = json.load(open(cwd / 'sw' / 'sweep.json'))['rows']
    assert all(r['gen_ppl'] > 1 and r['entropy'] > 0 and r['seconds_per_sample'] > 0 and 0 <= r['valid_words'] <= 1
               and r['seconds_batch_1'] > 0 for r in rows)
    assert [r['eta'] for r in rows if r['method'].startswith('FLM')] == [0, 1]
    # character data: the entropy of the decoded text's characters is the ids'
    assert all(r['entropy'] == r['token_entropy'] for r in rows)
    # a second run judges the same files again, and samples nothing
    stamps = {f: os.path.getmtime(cwd / 'sw' / 'samples' / f) for f in os.listdir(cwd / 'sw' / 'samples')}
    again = run_script('tools/sweep.py', *args, cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert stamps == {f: os.path.getmtime(cwd / 'sw' / 'samples' / f) for f in os.listdir(cwd / 'sw' / 'samples')}
    assert (cwd / 'sw' / 'sweep.md').read_text() == table


def test_bench_times_every_method(tmp_path):
    r = run_script('bench.py', '--L=16', '--K=11', '--n_layer=1', '--n_embd=16', '--n_head=2', '--n_cond=8',
                   '--batch=2', '--train_batch=2', '--flm_steps=2', '--reps=1', '--out=b.json', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.load(open(tmp_path / 'b.json'))['results'][0]
    assert set(res['train']) == {'FLM', 'FMLM stage 1', 'FMLM stage 2', 'FMLM flowmap', 'MDLM', 'AR'}
    assert res['memory'] == {}  # K <= d: the state stays in R^K, nothing to compare
    assert set(res['latency']) == set(res['throughput']) == {
        'FLM 2 steps', 'FMLM 1 step', 'FMLM 2 steps', 'FMLM 4 steps', 'MDLM 8 steps', 'AR (KV cache)'}
    assert all(v > 0 for d in (res['train'], res['latency'], res['throughput']) for v in d.values())
    assert "AR (KV cache) latency / FMLM 1-step latency" in r.stdout
