"""
The sampling as an animation (sample.py --animate=FILE.gif): one frame per sampler step, each showing
the argmax text of that step's denoiser D for one sample (batch 1, the run's seed), every character
shaded by D's confidence (the probability of its argmax token: pale where the flow has not decided,
dark where it has), and the sampler's final text as the last frame. A flow map is shown beside its
teacher from the same noise: its 1-step and 4-step paths under the teacher's 64-step one, each path
showing its latest step at the teacher's time. The trajectory comes from flm.euler_sample's on_step
hook (the notebooks use the same); matplotlib's animation with its Pillow writer writes the GIF, each
frame one image of glyphs composed on a grid (fast: no text artist per character).
"""

import os

import numpy as np
import torch

import flm
from tools import runs

KINDS = ('flm', 'flowmap', 'stage2')  # the checkpoints sampled by flm.euler_sample
COLUMNS = 64      # characters per row
MAX_ROWS = 12     # longer texts are cut (a BPE block of 1024 tokens is thousands of characters)
CELL = (9, 17)    # a character's cell in pixels (width, height)


def trajectory(net, table, K, L, steps, eta, seed, device, flow_map=False, prompt=None):
    """One sample's path: [(t, ids, confidence)] per step, then (1, final ids, ones). prompt: (x_known,
    known) of batch 1. Deterministic for a seed."""
    frames = []

    def on_step(i, t, z, logits):
        p = torch.softmax(logits[0].float(), -1)
        confidence, ids = p.max(-1)
        frames.append((t[0].item(), ids.tolist(), confidence.tolist()))
    x_known, known = prompt if prompt is not None else (None, None)
    generator = torch.Generator(device=device).manual_seed(seed)
    final = flm.euler_sample(net, table, (1, L, K), steps, x_known, known, generator, device, eta, flow_map=flow_map,
                             on_step=on_step, self_cond=net.cfg.self_cond)
    return frames + [(1.0, final[0].tolist(), [1.0] * L)]


def glyphs(chars, size=11):
    """{character: its ink (h, w) in [0, 1]}, drawn once with matplotlib in a monospace font."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    w, h = CELL
    fig = Figure(figsize=(w / 100, h / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    out = {}
    for c in sorted(chars):
        fig.texts.clear()
        fig.text(0.5, 0.45, c, ha='center', va='center', family='DejaVu Sans Mono', size=size * 0.8)
        canvas.draw()
        # ink in 5 levels: with 9 shades, a frame has few colours, which a GIF stores without dithering
        out[c] = np.round(4 * (1 - np.asarray(canvas.buffer_rgba())[..., 0].astype(np.float32) / 255)) / 4
    return out


def cells(text, confidence):
    """A text laid out on the grid: (characters, their confidences), newlines and tabs as visible marks."""
    chars = [{'\n': '\u21b5', '\t': '\u2192'}.get(c, c) for c in text]
    return chars[:COLUMNS * MAX_ROWS], confidence[:COLUMNS * MAX_ROWS]


def render(chars, confidence, rows, ink, columns=COLUMNS):
    """The grid image (rows * h, columns * w, 3) of characters whose ink is shaded by confidence."""
    w, h = CELL
    image = np.ones((rows * h, columns * w, 3), dtype=np.float32)
    for k, (c, p) in enumerate(zip(chars, confidence)):
        r, col = divmod(k, columns)
        shade = 0.85 * round(8 * (1 - p)) / 8  # confidence 1: black ink; near 0: pale grey (9 shades)
        a = ink.get(c, ink['?'])[..., None]
        image[r * h:(r + 1) * h, col * w:(col + 1) * w] = 1 - a + a * np.array([shade, shade, 0.25 + 0.75 * shade])
    return image


def write_gif(path, paths, decode_pieces, fps=8):
    """paths: [(title, frames)] with frames from `trajectory`; every path is shown at the time of the
    longest one's frames (the longest path's steps + 1 frames). decode_pieces(ids) -> the text of each
    token (a character, or a BPE token's characters), so that a token's confidence shades its characters.
    Each frame is composed here as one image (titles too, from the same glyphs); matplotlib shows it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.animation import PillowWriter

    def laid_out(ids, confidence):
        text, conf = [], []
        for piece, p in zip(decode_pieces(ids), confidence):
            text += piece
            conf += [p] * len(piece)
        return cells(text, conf)
    laid = [[(t, *laid_out(ids, c)) for t, ids, c in frames] for _, frames in paths]
    rows = max(1, max(-(-len(chars) // COLUMNS) for frames in laid for _, chars, _ in frames))
    longest = max(range(len(laid)), key=lambda i: len(laid[i]))
    n = len(laid[longest])
    labels = [f"step {i + 1} of {n - 1}, t = {laid[longest][i][0]:.3f}" for i in range(n - 1)] + ['final text']
    legend = "shade: the denoiser's confidence"
    ink = glyphs({c for frames in laid for _, chars, _ in frames for c in chars}
                 | set(''.join(title for title, _ in paths) + ''.join(labels) + legend + '?'))

    def line(text, grey=0.35):  # a row of text in the same glyphs, full confidence shaded grey
        return render(list(text[:COLUMNS]), [1 - grey / 0.85] * len(text), 1, ink)

    def frame_of(frames, i):
        """This path's latest frame at the longest path's frame i (the final text at the end)."""
        if i == n - 1:
            return frames[-1]
        return [f for f in frames[:-1] if f[0] <= laid[longest][i][0] + 1e-9][-1]

    def compose(i):
        parts = []
        for (title, _), frames in zip(paths, laid):
            _, chars, conf = frame_of(frames, i)
            parts += [line(title, 0.0), render(chars, conf, rows, ink), np.ones((CELL[1] // 2, COLUMNS * CELL[0], 3))]
        bottom = line(legend + ' ' * (COLUMNS - len(legend) - len(labels[i])) + labels[i])
        rgb = (255 * np.concatenate(parts + [bottom]).clip(0, 1)).round().astype(np.uint8)
        return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)  # RGBA: drawn as is
    first = compose(0)
    fig = plt.figure(figsize=(first.shape[1] / 100, first.shape[0] / 100), dpi=100)
    image = fig.figimage(first)
    tmp, writer = path + '.tmp.gif', PillowWriter(fps=fps)
    with writer.saving(fig, tmp, dpi=100):  # the writer alone: FuncAnimation would draw every frame twice
        for i in range(n):
            image.set_data(compose(i))
            writer.grab_frame()
    plt.close(fig)
    os.replace(tmp, path)  # a complete file or none
    return n


def teacher_of(source, device):
    """A flow map's FLM teacher, where its checkpoint names one that is there (--teacher, or the --stage1
    checkpoint that carries it); else None."""
    if not os.path.isfile(source):
        return None
    config = runs.load_checkpoint(source, 'the flow map', device)['config']
    if config.get('kind') == 'stage2' and os.path.isfile(config.get('stage1', '')):
        return runs.teacher_of(runs.load_checkpoint(config['stage1'], '--stage1', device), device)
    if os.path.isfile(config.get('teacher', '')):
        return runs.from_checkpoint(runs.load_checkpoint(config['teacher'], '--teacher', device), device)[0]
    return None


def animate(path, kind, model, source, table, steps, eta, seed, device, decode, prompt=None):
    """sample.py --animate: an FLM's path at the run's steps and eta; a flow map's 1-step, 4-step (and the
    run's) paths under its teacher's 64-step one (eta 0, the sampler it distils), all from the same noise
    (the teacher where its checkpoint can be found, else the flow map alone). Prints what it wrote."""
    L, K = model.cfg.block_size, model.cfg.vocab_size

    def path_of(net, n, e, flow_map):
        return trajectory(net, table, K, L, n, e, seed, device, flow_map, prompt)
    if kind == 'flm':
        paths = [(f"FLM, {steps} Euler steps" + (f", eta {eta:g}" if eta else ''), path_of(model, steps, eta, False))]
    else:
        teacher = teacher_of(source, device)
        if teacher is None:
            print("note: the flow map's teacher was not found: the animation shows the flow map alone")
        paths = ([("teacher FLM, 64 Euler steps (eta 0)", path_of(teacher, 64, 0.0, False))] if teacher else [])
        paths += [(f"flow map, {n} step{'s' if n > 1 else ''}", path_of(model, n, eta, True))
                  for n in sorted({steps, 4, 1}, reverse=True)]
    frames = write_gif(path, paths, lambda ids: [decode([i]) for i in ids])
    print(f"wrote {path} ({frames} frames)")
