"""
Plots. A run's evaluations (out_dir/eval_log.jsonl, written by train.py) against iterations:
an FLM run's context gain and validation CE at each t of the eval grid (an MDLM run: at each
masked share; an AR run: its NLL); a distillation run's 1- and 4-step valid words and unigram
entropy, with the teacher's many-step sampler and real text as reference lines.
An NFE sweep (sweep.json, written by tools/sweep.py): Gen PPL and entropy against seconds per sample.

$ python -m tools.plot_eval --out_dir=out-shakespeare-char --png=assets/context_gain.png
$ python -m tools.plot_eval --out_dir=out-shakespeare-char-fm --png=assets/distill.png
$ python -m tools.plot_eval --sweep=sweep-shakespeare-char/sweep.json --png=assets/sweep.png
"""
import json
import os
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

from configurator import configure, die  # noqa: E402


def save(fig, png, bottom=0.0):
    fig.tight_layout(rect=(0, bottom, 1, 1))  # bottom: room for a note under the axes
    os.makedirs(os.path.dirname(png) or '.', exist_ok=True)
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


def plot_distillation(rows, png):
    iters = [r['iter'] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in zip(axes, ('valid_words', 'entropy'), ('valid-word fraction', 'unigram entropy (nats)')):
        if key not in rows[0]['teacher']:
            die(f"the evaluations have no {key} figures")
        for name in ('1 step', '4 step'):
            ax.plot(iters, [r[name][key] for r in rows], 'o-', label=f"{rows[0]['kind']}, {name}")
        ax.axhline(rows[0]['teacher'][key], color='C2', ls='--', label='FLM teacher, many steps')
        ax.axhline(rows[0]['reference'][key], color='gray', ls=':', label='real text')
        ax.set(xlabel='iteration', title=label)
    axes[0].legend(fontsize=8)
    save(fig, png)


def plot_run(log_path, png):
    if not os.path.isfile(log_path):
        die(f"no evaluations at {log_path}; train with python train.py --out_dir={os.path.dirname(log_path)}")
    with open(log_path) as f:
        records = {r['iter']: r for r in map(json.loads, f)}  # one per iteration
    rows = [records[i] for i in sorted(records)]
    kind = {'flowmap-1': 'stage1', 'flowmap-2': 'stage2'}.get(rows[0].get('kind', 'flm'), rows[0].get('kind', 'flm'))
    if kind in ('stage1', 'stage2', 'flowmap'):  # flow maps: their samples' figures
        return plot_distillation(rows, png)
    iters = [r['iter'] for r in rows][1:]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(iters, [r['val']['gain'] for r in rows[1:]], label='val')
    ax1.plot(iters, [r['train']['gain'] for r in rows[1:]], '--', label='train')
    ax1.axhline(0, color='gray', lw=0.8)
    ax1.set(xlabel='iteration', ylabel='nats', title={
        'flm': 'context gain at t = 0.5\nCE(per-token Bayes) - CE(model)',
        'ar': 'context gain\nCE(unigram) - NLL(model)',
        'mdlm': 'context gain at masked share 0.5\nCE(unigram) - CE(model)'}[kind])
    ax1.legend()
    if kind == 'ar':
        for split, style in (('val', '-'), ('train', '--')):
            ax2.plot(iters, [r[split]['ce'] for r in rows[1:]], style, label=split)
        ax2.set(xlabel='iteration', ylabel='nats', title='NLL per token (EMA weights)')
    else:
        for j, t in enumerate(rows[0]['eval_t']):
            ax2.plot(iters, [r['val']['ce_t'][j] for r in rows[1:]], label=f"{'t' if kind == 'flm' else 'masked'} = {t}")
        ax2.set(xlabel='iteration', ylabel='nats', title='validation CE by model time t (EMA weights)' if kind == 'flm'
                else 'validation CE of masked tokens, by masked share')
    ax2.legend(fontsize=8)
    save(fig, png)


def plot_sweep(sweep_path, png):
    with open(sweep_path) as f:
        sweep = json.load(f)
    rows, reference, cfg = sweep['rows'], sweep['reference'], sweep['config']
    # a degenerate sampler (e.g. the FLM's one step: one character everywhere, entropy 0) would squash
    # both axes: it is left off the plot and named under it
    floor = 0.5 * (reference['entropy'] if reference else max(r['entropy'] for r in rows))
    shown = [r for r in rows if r['entropy'] >= floor]
    off = [r for r in rows if r['entropy'] < floor]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, label in ((axes[0], 'gen_ppl', 'Gen PPL under the judge (lower: likelier text)'),
                           (axes[1], 'entropy', 'unigram entropy per sample (nats)')):
        flm_styles = iter(['o-', 'o--', 'o:', 'o-.'] * 4)  # the FLM at one or several etas ('FLM eta 0', ...)
        for method in dict.fromkeys(r['method'] for r in rows):
            style = {'FMLM': 's-', 'MDLM': '^-', 'AR': '*'}.get(method) or next(flm_styles)
            rs = [r for r in shown if r['method'] == method]
            if rs:
                ax.plot([r['seconds_per_sample'] for r in rs], [r[key] for r in rs], style, label=method,
                        markersize=12 if method == 'AR' else 5)
            for r in rs:
                if r['steps']:
                    ax.annotate(str(r['steps']), (r['seconds_per_sample'], r[key]), fontsize=7,
                                textcoords='offset points', xytext=(3, 3))
        if reference:
            ax.axhline(reference[key], color='gray', ls='--', lw=1, label='real text')
        ax.set_xscale('log')
        ax.set_xlabel(f"seconds per sample (batch {cfg['batch_size']}, {sweep.get('device', cfg.get('device'))}); labels: steps")
        ax.set_title(label)
    axes[0].set_yscale('log')
    axes[0].yaxis.set_major_formatter(FormatStrFormatter('%g'))
    axes[0].yaxis.set_minor_formatter(NullFormatter())
    axes[0].legend()
    if off:
        fig.text(0.01, 0.01, 'not shown: ' + '; '.join(
            f"{r['method']} {r['steps'] or ''} step{'s' if (r['steps'] or 0) > 1 else ''} (Gen PPL {r['gen_ppl']:.3g}, "
            f"entropy {r['entropy']:.2f})" for r in off), fontsize=8)
    save(fig, png, 0.04 if off else 0.0)


if __name__ == '__main__':
    config = configure({'out_dir': 'out-shakespeare-char', 'sweep': '', 'png': 'context_gain.png'}, sys.argv[1:])
    if config['sweep']:
        plot_sweep(config['sweep'], config['png'])
    else:
        plot_run(os.path.join(config['out_dir'], 'eval_log.jsonl'), config['png'])
