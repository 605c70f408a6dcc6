"""Every preset in config/ sets only options of the script it is for (bench_*.py: bench.py, sweep_*.py:
sweep.py; the others: train.py), each with its default's type, read the way the scripts read them (configurator.overrides);
the OpenWebText distillation presets are the paper's code's settings."""
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


def test_owt_distillation_presets():
    read = {name: overrides(script_defaults('train.py'), [os.path.join(ROOT, 'config', f'distill_{name}_owt.py')])
            for name in ('flowmap', 'stage1', 'stage2')}
    for name, (kind, sequences, boundary, weighted) in {'flowmap': ('flowmap', 128, 64, True),
                                                         'stage1': ('stage1', 128, 64, True),
                                                         'stage2': ('stage2', 512, 128, False)}.items():
        c = read[name]
        assert (c['kind'], c['batch_size'] * c['gradient_accumulation_steps'], c['boundary_every'],
                c['loss_weighting']) == (kind, sequences, boundary, weighted)
        assert (c['learning_rate'], c['ema_decay'], c['warmup_iters'], c['decay_lr'], c['max_iters'],
                c['block_size'], c['dataset']) == (3e-4, 0.9999, 2500, False, 1_000_000, 1024, 'openwebtext')
    assert read['flowmap']['diagonal_share'] == 0.5
