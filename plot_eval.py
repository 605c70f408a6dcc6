"""
Plot a run's evaluations (out_dir/eval_log.jsonl, written by train.py): the
context gain and the validation CE at each t of the eval grid, against iterations.

$ python plot_eval.py --out_dir=out-shakespeare-char --png=assets/context_gain.png
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

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.plot(iters[1:], [r['val']['gain'] for r in rows[1:]], label='val')
ax1.plot(iters[1:], [r['train']['gain'] for r in rows[1:]], '--', label='train')
ax1.axhline(0, color='gray', lw=0.8)
ax1.set(xlabel='iteration', ylabel='nats', title='context gain at t = 0.5\nCE(per-token Bayes) - CE(model)')
ax1.legend()
for j, t in enumerate(rows[0]['eval_t']):
    ax2.plot(iters[1:], [r['val']['ce_t'][j] for r in rows[1:]], label=f't = {t}')
ax2.set(xlabel='iteration', ylabel='nats', title='validation CE by model time t (EMA weights)')
ax2.legend(fontsize=8)
fig.tight_layout()
os.makedirs(os.path.dirname(config['png']) or '.', exist_ok=True)
fig.savefig(config['png'], dpi=120)
print(f"wrote {config['png']}")
