"""
nanoGPT-style configuration: a dict of plain default values, updated by
optional config files (`config/foo.py`, plain Python assignments) and then by
`--key=value` overrides, in the order given on the command line:

    python train.py config/distill_stage1_shakespeare_char.py --teacher=out-shakespeare-char/ckpt.pt --batch_size=16

Every option keeps the type of its default: a string option takes the text as
typed (--out_dir=0x10 is the folder '0x10'), a number option a number, a flag
True or False. An unknown key or a value of the wrong type is a one-line error
that names the valid keys.
"""

import math
import os
from ast import literal_eval


def die(msg):
    """Exit with a one-line error on stderr (exit status 1)."""
    raise SystemExit(f"error: {msg}")


def _typed(key, value, default):
    if isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # float: an int will do
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        die(f"--{key} takes a {type(default).__name__} (default {default!r}), got {value!r}")
    if isinstance(default, float) and not math.isfinite(value):  # 1e400 reads as inf, as a literal inf would
        die(f"--{key} takes a finite number, got {value!r}")
    return float(value) if isinstance(default, float) else value


def overrides(defaults, argv):
    """The values that the config files and --key=value items of argv set, typed as their defaults."""
    given = {}

    def set_value(key, value):
        if key not in defaults:
            die(f"unknown option '{key}'; valid options: {', '.join(sorted(defaults))}")
        given[key] = _typed(key, value, defaults[key])

    for arg in argv:
        if arg.startswith("--"):
            if "=" not in arg:
                die(f"expected --key=value, got '{arg}'")
            key, text = arg[2:].split("=", 1)
            if isinstance(defaults.get(key), str):
                value = text  # a string option is the text as typed
            else:
                try:
                    value = literal_eval(text)
                except (ValueError, SyntaxError):
                    value = text  # reported as the wrong type
            set_value(key, value)
        else:
            if not os.path.isfile(arg):
                die(f"config file '{arg}' not found (options are given as --key=value)")
            values = run_config_file(arg)
            for key, value in values.items():
                if not key.startswith("_"):
                    set_value(key, value)
    return given


def run_config_file(path):
    """The names a config file (plain Python assignments, and include('file.py') of another beside it)
    sets. A file that cannot be read or run is a one-line error naming the file and the line."""
    try:
        with open(path, encoding='utf-8') as f:
            code = compile(f.read(), path, 'exec')
    except SyntaxError as e:
        die(f"config file {path}, line {e.lineno}: {e.msg}")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        die(f"config file {path}: cannot read it: {e}")
    values = {}
    # include('other.py'): the values of another config file beside this one, set where it is called
    include = lambda other: values.update(run_config_file(os.path.join(os.path.dirname(path), other)))  # noqa: E731
    try:
        exec(code, {'include': include}, values)
    except Exception as e:
        import traceback
        line = [frame.lineno for frame in traceback.extract_tb(e.__traceback__) if frame.filename == path]
        die(f"config file {path}, line {line[-1] if line else '?'}: {type(e).__name__}: {e}")
    return values


def configure(defaults, argv):
    """Return a copy of `defaults` updated by the config files and --key=value items of argv."""
    return {**defaults, **overrides(defaults, argv)}


def int_list(text, key, minimum=1):
    """'1,2,4' -> [1, 2, 4]: whole numbers >= minimum, comma-separated, nothing else."""
    items = [s.strip() for s in text.split(",")]
    if not all(s.isascii() and s.isdigit() and int(s) >= minimum for s in items):
        die(f"--{key} takes whole numbers >= {minimum}, comma-separated; got '{text}'")
    return [int(s) for s in items]


def resume_config(defaults, given, saved, may_change):
    """A resumed run's options: those it was started with (saved), then those given now, which may
    only change the keys in may_change (out_dir and init_from are always the ones given now)."""
    saved = {k: v for k, v in saved.items() if k in defaults and k not in ('out_dir', 'init_from')}
    changed = {k: v for k, v in given.items() if k in saved and v != saved[k]}
    fixed = [k for k in changed if k not in may_change]
    if fixed:
        die(f"--init_from=resume: {', '.join(f'--{k}={given[k]!r} (the run has {saved[k]!r})' for k in fixed)} "
            f"would change the model or the data; a resumed run may change only {', '.join(sorted(may_change))}")
    for k, v in changed.items():
        print(f"resume: {k} = {v!r} (was {saved[k]!r})")
    return {**defaults, **saved, **given}


def check(config, rules):
    """rules: {key: (valid, what it must be)}: a one-line error for the first invalid option."""
    for key, (ok, what) in rules.items():
        if not ok:
            die(f"--{key} must be {what}, got {config[key]!r}")
