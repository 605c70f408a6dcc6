"""Loading the paper's released checkpoints (pretrained.py), offline.

tests/fixtures/paper_flm and paper_fmlm are tiny FLM and FMLM checkpoints in the release's
layout (config.json and model.safetensors with the reference DiT's key names and config fields,
as huggingface_hub's PyTorchModelHubMixin writes them), with random weights, every layer
non-zero; expected.safetensors holds inputs x (noisy vectors), times t (and t2, the FMLM's second
time) and the logits the reference DiT (github david3684/flm, models/dit.py, run once on CPU
outside this repository) gave for them. Checked here:
- the loaded network reproduces the reference's raw logits (atol 1e-4 in float32), nothing added
  on top (the reference's FLM output goes to log_softmax as it is), and every switch matters on them;
- the switches off (the default) leave this project's network and state dict as they were;
- a missing or a renamed weight, a missing safetensors or huggingface_hub: one-line errors;
- end to end: sample.py --init_from=FOLDER samples the paper's way by default and writes the samples'
  ids, the kind, the steps, eta and the tokenizer.
Skipped without safetensors (optional for users; CI installs it).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

pytest.importorskip("safetensors")
from safetensors.torch import load_file, save_file  # noqa: E402

import flm  # noqa: E402
from tools import pretrained  # noqa: E402
from conftest import ROOT, run_script  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
KINDS = {'paper_flm': 'flm', 'paper_fmlm': 'stage2'}


def fixture(name):
    return os.path.join(FIXTURES, name)


def logits_of(net, expected):
    with torch.no_grad():
        return net(expected['x'], expected['t'], expected.get('t2'))


@pytest.mark.parametrize('name', sorted(KINDS))
def test_loader_reproduces_the_reference_outputs(name):
    p = pretrained.load_pretrained(fixture(name))
    assert (p.kind, p.tokenizer, p.block_size, p.vocab_size) == (KINDS[name], None, 16, 64)
    assert not p.model.training and p.model.cfg.two_times == (p.kind == 'stage2')
    expected = load_file(os.path.join(fixture(name), 'expected.safetensors'))
    ref = expected['logits']
    assert ref.abs().max() > 30  # large logits: a cap of the output (the code's first commits had one at 30) shows
    torch.testing.assert_close(logits_of(p.model, expected), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize('switch, off', [('attn_softcap', 0.0), ('time_scale', 1000.0), ('ln_scale', False)])
def test_every_switch_matters_on_the_fixtures(switch, off):
    # without one of the reference's details the outputs are far off: the parity above sees each
    for name in KINDS:
        p = pretrained.load_pretrained(fixture(name))
        net = flm.FLM(flm.FLMConfig(**{**p.model_args, switch: off}))
        net.load_state_dict(p.model.state_dict(), strict=switch != 'ln_scale')  # no scale: the weights unused
        expected = load_file(os.path.join(fixture(name), 'expected.safetensors'))
        assert (logits_of(net.eval(), expected) - logits_of(p.model, expected)).abs().max() > 0.1


def test_switches_off_by_default_add_no_weights():
    cfg = flm.FLMConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, n_cond=4)
    assert (cfg.ln_scale, cfg.attn_softcap, cfg.time_scale) == (False, 0.0, 1000.0)
    keys = set(flm.FLM(cfg).state_dict())
    assert not any('ln' in k for k in keys)
    on = set(flm.FLM(flm.FLMConfig(**{**cfg.__dict__, 'ln_scale': True})).state_dict())
    assert on - keys == {'blocks.0.ln1.weight', 'blocks.0.ln2.weight', 'ln_f.weight'}


def edited_copy(tmp_path, name, edit):
    """A copy of a fixture whose weights went through edit(dict)."""
    folder = str(tmp_path / name)
    shutil.copytree(fixture(name), folder)
    path = os.path.join(folder, 'model.safetensors')
    weights = load_file(path)
    edit(weights)
    save_file(weights, path)
    return folder


def load_error(folder):
    with pytest.raises(SystemExit) as e:
        pretrained.load_pretrained(folder)
    msg = str(e.value)
    assert msg.startswith('error: ') and '\n' not in msg
    return msg


def test_a_missing_weight_is_a_one_line_error(tmp_path):
    folder = edited_copy(tmp_path, 'paper_fmlm', lambda w: w.pop('blocks.1.norm2.weight'))
    assert "'blocks.1.norm2.weight' is missing" in load_error(folder)


def test_a_renamed_weight_is_a_one_line_error(tmp_path):
    rename = lambda w: w.update({'output_layer.linear.b': w.pop('output_layer.linear.bias')})  # noqa: E731
    folder = edited_copy(tmp_path, 'paper_flm', rename)
    msg = load_error(folder)
    assert "unexpected weight 'output_layer.linear.b'" in msg and "'output_layer.linear.bias'" in msg


def test_not_a_checkpoint_is_a_one_line_error(tmp_path):
    assert 'no config.json' in load_error(str(tmp_path))
    assert 'nor owner/name' in load_error(str(tmp_path / 'not-here'))


@pytest.mark.parametrize('package, name', [('safetensors', fixture('paper_flm')),
                                           ('huggingface_hub', 'FMLM-B-OWT')])
def test_a_missing_package_is_a_one_line_error(tmp_path, package, name):
    # a stub package that fails to import, first on the path, stands for the missing one
    os.makedirs(tmp_path / package)
    (tmp_path / package / '__init__.py').write_text("raise ImportError('not installed')\n")
    code = f"from tools import pretrained; pretrained.load_pretrained({name!r})"
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), ROOT]), 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: this needs the '{package}' package: pip install {package}"


@pytest.mark.parametrize('name, steps', [('paper_fmlm', 1), ('paper_flm', 1024)])
def test_sample_py_from_a_released_checkpoint(tmp_path, name, steps):
    # by default the paper's way: eta 0, 1024 Euler steps for an FLM, one jump for an FMLM
    folder = str(tmp_path / 'release')
    shutil.copytree(fixture(name), folder)
    os.remove(os.path.join(folder, 'expected.safetensors'))  # a release holds just the two files
    r = run_script('sample.py', f'--init_from={folder}', '--num_samples=2', '--out=x.json',
                   cwd=str(tmp_path), env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / 'x.json', encoding='utf-8') as f:
        result = json.load(f)
    ids = torch.tensor(result['ids'])
    assert ids.shape == (2, 16) and 0 <= ids.min() and ids.max() < 64
    s = result['settings']
    assert (s['kind'], s['steps'], s['eta'], s['tokenizer']) == (KINDS[name], steps, 0.0, 'ids')  # no known tokenizer
