"""
nanoGPT-style configuration: a dict of plain default values, updated by
optional config files (`config/foo.py`, plain Python assignments) and then by
`--key=value` overrides, in the order given on the command line:

    python train.py config/distill_stage1_shakespeare_char.py --teacher=out-shakespeare-char/ckpt.pt --batch_size=16

An unknown key or a value of the wrong type is a one-line error that names the
valid keys.
"""

import os
from ast import literal_eval


def die(msg):
    """Exit with a one-line error on stderr (exit status 1)."""
    raise SystemExit(f"error: {msg}")


def _typed(key, value, default):
    if isinstance(default, str):
        return str(value)  # --out_dir=123 is the folder '123'
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # float: an int will do
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        die(f"--{key} takes a {type(default).__name__} (default {default!r}), got {value!r}")
    return float(value) if isinstance(default, float) else value


def configure(defaults, argv):
    """Return a copy of `defaults` updated by the config files and --key=value items of argv."""
    config = dict(defaults)

    def set_value(key, value):
        if key not in config:
            die(f"unknown option '{key}'; valid options: {', '.join(sorted(config))}")
        config[key] = _typed(key, value, config[key])

    for arg in argv:
        if arg.startswith("--"):
            if "=" not in arg:
                die(f"expected --key=value, got '{arg}'")
            key, text = arg[2:].split("=", 1)
            try:
                value = literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare string, e.g. --out_dir=out-foo
            set_value(key, value)
        else:
            if not os.path.isfile(arg):
                die(f"config file '{arg}' not found (options are given as --key=value)")
            values = {}
            exec(open(arg).read(), {}, values)
            for key, value in values.items():
                if not key.startswith("_"):
                    set_value(key, value)
    return config
