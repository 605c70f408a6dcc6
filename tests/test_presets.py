"""Every preset in config/ sets only options of the script it is for (bench_*.py: bench.py, sweep_*.py:
sweep.py; the others: train.py), each with its default's type, read the way the scripts read them (configurator.overrides);
the OpenWebText and LM1B presets (FLM, one-network flow map, two stages) are the paper's code's settings."""
import ast
import glob
import os

import pytest

from configurator import overrides
from conftest import ROOT


def script_defaults(script):
    """The plain values a script assigns at the top level before it reads its options."""
    defaults = {}
    for node in ast.parse(open(os.path.join(ROOT, script)).read()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ('defaults', 'config_keys'):
                break
            try:
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return defaults


@pytest.mark.parametrize("preset", sorted(glob.glob(os.path.join(ROOT, 'config', '*.py'))), ids=os.path.basename)
def test_preset_sets_options_of_its_script(preset):
    name = os.path.basename(preset)
    script = 'bench.py' if name.startswith('bench_') else 'tools/sweep.py' if name.startswith('sweep_') else 'train.py'
    defaults = script_defaults(script)
    assert ({'batch_size', 'kind', 'wandb_log'} <= set(defaults) or {'train', 'samplers'} <= set(defaults)
            or {'judge', 'flm_steps', 'latency'} <= set(defaults))
    given = overrides(defaults, [preset])  # an unknown key or a wrong type exits with a one-line error
    assert given


@pytest.mark.parametrize('data, block, teacher_batch, every', [('owt', 1024, 128, 10000), ('lm1b', 128, 512, 10000)])
def test_distillation_presets(data, block, teacher_batch, every):
    """The paper's code's scripts/train_{owt,lm1b}_flm_distill.sh (stage 1, and the one-network flow map) and
    ..._second.sh (stage 2): global batch, boundary, loss weighting, schedule, evaluation interval."""
    read = {name: overrides(script_defaults('train.py'), [os.path.join(ROOT, 'config', f'distill_{name}_{data}.py')])
            for name in ('flowmap', 'stage1', 'stage2')}
    for name, (kind, sequences, boundary, weighted, interval) in {
            'flowmap': ('flowmap', teacher_batch, 64, True, every),
            'stage1': ('stage1', teacher_batch, 64, True, every),
            'stage2': ('stage2', 512, 128, False, 5000)}.items():
        c = read[name]
        assert (c['kind'], c['batch_size'] * c['gradient_accumulation_steps'], c['boundary_every'],
                c['loss_weighting'], c['eval_interval']) == (kind, sequences, boundary, weighted, interval)
        assert (c['learning_rate'], c['ema_decay'], c['warmup_iters'], c['decay_lr'], c['max_iters'],
                c['block_size'], c['dataset']) == (3e-4, 0.9999, 2500, False, 1_000_000, block,
                                                   {'owt': 'openwebtext', 'lm1b': 'lm1b'}[data])
    assert read['flowmap']['diagonal_share'] == 0.5


@pytest.mark.parametrize('data, block', [('owt', 1024), ('lm1b', 128)])
def test_flm_presets(data, block):
    """scripts/train_{owt,lm1b}_flm.sh with configs/config.yaml and model/small.yaml: the paper's network
    (tests/test_paper.py: the reference's parameter count), global batch 512, lr 3e-4, 1.5M steps."""
    c = {**script_defaults('train.py'), **overrides(script_defaults('train.py'), [os.path.join(ROOT, 'config',
                                                                                               f'train_{data}.py')])}
    assert (c['n_layer'], c['n_head'], c['n_embd'], c['n_cond'], c['dropout'], c['block_size']) == \
        (12, 12, 768, 128, 0.1, block)
    assert (c['ln_scale'], c['attn_softcap'], c['time_scale'], c['embed_dropout']) == (True, 50.0, 1.0, False)
    assert (c['batch_size'] * c['gradient_accumulation_steps'], c['learning_rate'], c['beta1'], c['beta2'],
            c['weight_decay'], c['grad_clip'], c['ema_decay'], c['warmup_iters'], c['decay_lr'], c['max_iters'],
            c['eval_interval']) == (512, 3e-4, 0.9, 0.999, 0.0, 1.0, 0.9999, 2500, False, 1_500_000, 5000)


def test_the_shakespeare_defaults_keep_this_project_s_network():
    d = script_defaults('train.py')
    assert (d['ln_scale'], d['attn_softcap'], d['time_scale'], d['embed_dropout'], d['dropout']) == \
        (False, 0.0, 1000.0, True, 0.0)
