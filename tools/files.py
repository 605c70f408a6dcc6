"""
The files sample.py reads and writes, checked before any work and without torch, so that a refused
command answers at once: where the samples and the animation go (never over a file that is not a samples
file or a GIF, unless --force, and never over the checkpoint being read), the prompt file, a quiet Ctrl-C, and a JSON file
written through a temporary one.
"""

import json
import os
import signal
import sys

from configurator import die


def quiet_ctrl_c(what):
    """Ctrl-C from here on: one line on stderr saying `what`, exit 130, no traceback."""
    def stop(signum, frame):
        print(f"stopped by Ctrl-C; {what}", file=sys.stderr)
        sys.exit(128 + signum)
    signal.signal(signal.SIGINT, stop)


def is_samples_file(path):
    """Whether path holds what sample.py --out writes (a JSON object with samples and ids): a file it may replace."""
    try:
        with open(path, 'rb') as f:
            if f.read(1) != b'{':  # a checkpoint, a data file: not read on
                return False
            f.seek(0)
            found = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and {'samples', 'ids'} <= set(found)


def is_gif(path):
    """Whether path holds a GIF (what sample.py --animate writes): a file it may replace."""
    try:
        with open(path, 'rb') as f:
            return f.read(4) == b'GIF8'
    except OSError:
        return False


def check_output(out, read, force, flag='--out', what=('samples', is_samples_file)):
    """A one-line error now, before the sampling, for an --out (or --animate) that could not or must not be
    written: a folder, a place without a writable folder, one of the files being read, or (unless force) an
    existing file that is not a samples file (a GIF: what=('GIF', is_gif))."""
    name, is_mine = what
    if os.path.isdir(out):
        die(f"{flag}={out} is a folder; name a file in it, e.g. {flag}={os.path.join(out, 'samples.json' if name == 'samples' else 'sampling.gif')}")
    folder = os.path.dirname(out) or '.'
    if (not os.path.exists(out) or os.path.isfile(out)) and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        die(f"{flag}={out}: no writable folder {folder}")  # (a new file, or a temporary one beside the old)
    if os.path.exists(out) and any(os.path.exists(f) and os.path.samefile(out, f) for f in read):
        die(f"{flag}={out} is the checkpoint being sampled; write to another file")
    if os.path.exists(out) and not force and not is_mine(out):
        die(f"{flag}={out} exists and is not a {name} file; name a new file, or replace it with --force=True")


def check_outputs(out, animate, read, force):
    """sample.py's --out (a samples file) and --animate (a GIF), where given: check_output for each."""
    if out:
        check_output(out, read, force)
    if animate:
        if out and os.path.abspath(animate) == os.path.abspath(out):
            die(f"--animate={animate} is also --out; write the GIF and the samples to two files")
        check_output(animate, read + ([out] if out else []), force, '--animate', ('GIF', is_gif))


def read_prompt(start):
    """--start: the text itself, or FILE:path to a UTF-8 file holding it."""
    if not start.startswith('FILE:'):
        return start
    try:
        with open(start[5:], 'r', encoding='utf-8') as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        die(f"cannot read the prompt file {start[5:]} as UTF-8 text: {e}")


def write_json(out, obj):
    """Write obj as JSON to out: a regular file through a temporary one, renamed: a failed write leaves what was there. (A device,
    allowed with --force, is written directly.)"""
    path = out if os.path.exists(out) and not os.path.isfile(out) else out + '.tmp'
    try:
        try:
            with open(path, 'w', encoding='utf-8') as f:
                json.dump(obj, f, indent=1)
            if path != out:
                os.replace(path, out)
        finally:
            if path != out and os.path.exists(path):
                os.remove(path)
    except OSError as e:
        die(f"cannot write {out}: {e.strerror or e}")
    print(f"wrote {out}")
