"""
Plot a run's evaluations (out_dir/eval_log.jsonl, written by train.py) against iterations.
An FLM run: the context gain and the validation CE at each t of the eval grid (an MDLM run:
at each masked share; an AR run: its NLL).
A distillation run: the 1- and 4-step samplers' valid words and unigram entropy, with the
teacher's many-step sampler and real text as reference lines.

$ python plot_eval.py --out_dir=out-shakespeare-char --png=assets/context_gain.png
$ python plot_eval.py --out_dir=out-shakespeare-char-fm2 --png=assets/distill.png
"""
import json
import os
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from configurator import configure, die  # noqa: E402

out_dir = 'out-shakespeare-char'
png = 'context_gain.png'
config = configure({'out_dir': out_dir, 'png': png}, sys.argv[1:])
log_path = os.path.join(config['out_dir'], 'eval_log.jsonl')
if not os.path.isfile(log_path):
    die(f"no evaluations at {log_path}; train with python train.py --out_dir={config['out_dir']}")
with open(log_path) as f:
    records = {r['iter']: r for r in map(json.loads, f)}  # a resumed run re-logs its first eval
rows = [records[i] for i in sorted(records)]
iters = [r['iter'] for r in rows]



def save(fig):
    fig.tight_layout()
    os.makedirs(os.path.dirname(config['png']) or '.', exist_ok=True)
    fig.savefig(config['png'], dpi=120)
    print(f"wrote {config['png']}")


kind = rows[0].get('kind', 'flm')
if kind in ('flowmap-1', 'flowmap-2'):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in zip(axes, ('valid_words', 'entropy'), ('valid-word fraction', 'unigram entropy (nats)')):
        if key not in rows[0]['teacher']:
            die(f"{log_path} has no {key} figures (they need character data)")
        for name in ('1 step', '4 step'):
            ax.plot(iters, [r[name][key] for r in rows], 'o-', label=f"{rows[0]['kind']}, {name}")
        ax.axhline(rows[0]['teacher'][key], color='C2', ls='--', label='FLM teacher, many steps')
        ax.axhline(rows[0]['reference'][key], color='gray', ls=':', label='real text')
        ax.set(xlabel='iteration', title=label)
    axes[0].legend(fontsize=8)
    save(fig)
    sys.exit(0)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.plot(iters[1:], [r['val']['gain'] for r in rows[1:]], label='val')
ax1.plot(iters[1:], [r['train']['gain'] for r in rows[1:]], '--', label='train')
ax1.axhline(0, color='gray', lw=0.8)
ax1.set(xlabel='iteration', ylabel='nats', title={
    'flm': 'context gain at t = 0.5\nCE(per-token Bayes) - CE(model)',
    'ar': 'context gain\nCE(unigram) - NLL(model)',
    'mdlm': 'context gain at masked share 0.5\nCE(unigram) - CE(model)'}[kind])
ax1.legend()
if kind == 'ar':
    for split, style in (('val', '-'), ('train', '--')):
        ax2.plot(iters[1:], [r[split]['ce'] for r in rows[1:]], style, label=split)
    ax2.set(xlabel='iteration', ylabel='nats', title='NLL per token (EMA weights)')
else:
    for j, t in enumerate(rows[0]['eval_t']):
        ax2.plot(iters[1:], [r['val']['ce_t'][j] for r in rows[1:]], label=f"{'t' if kind == 'flm' else 'masked'} = {t}")
    ax2.set(xlabel='iteration', ylabel='nats', title='validation CE by model time t (EMA weights)' if kind == 'flm'
            else 'validation CE of masked tokens, by masked share')
ax2.legend(fontsize=8)
save(fig)
