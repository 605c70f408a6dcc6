"""
nanoGPT-style configuration: a dict of plain default values, updated by
optional config files (`config/foo.py`, plain Python assignments) and then by
`--key=value` overrides, in the order given on the command line:

    python train.py config/distill_stage1_shakespeare_char.py --teacher=out-shakespeare-char/ckpt.pt --batch_size=16

Every option keeps the type of its default: a string option takes the text as
typed (--out_dir=0x10 is the folder '0x10'), a number option a number, a flag
True or False. An unknown key or a value of the wrong type is a one-line error
that names the valid keys.

Also the few system functions the scripts share: the device and autocast, a check that
a folder is writable, atomic saves, and optional Weights & Biases logging.
"""

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
            values = {}
            exec(open(arg).read(), {}, values)
            for key, value in values.items():
                if not key.startswith("_"):
                    set_value(key, value)
    return given


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


def system(device, dtype):
    """(device, device_type, autocast context) from the --device and --dtype options ('auto': the
    best this machine has; bfloat16 autocast on a GPU that supports it)."""
    import torch
    from contextlib import nullcontext
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    device_type = device.split(':')[0]
    available = {'cpu': True, 'cuda': torch.cuda.is_available(), 'mps': torch.backends.mps.is_available()}
    if not available.get(device_type):
        die(f"--device={device}: not available here; this machine has {', '.join(k for k, v in available.items() if v)}")
    if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        die(f"--dtype must be one of auto, float32, bfloat16, float16; got '{dtype}'")
    if dtype == 'auto':
        dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    ptdtype = getattr(torch, dtype)
    ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type=device_type, dtype=ptdtype)
    return device, device_type, dtype, ctx


def writable(folder, flag):
    """Make the folder, and check now that files can be written there (not at the first save)."""
    try:
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, '.writable'), 'w').close()
        os.remove(os.path.join(folder, '.writable'))
    except OSError as e:
        die(f"{flag}={folder}: cannot write there: {e.strerror or e}")


def save_atomic(obj, path):
    """torch.save to a temporary file, synced, then renamed: a kill at any moment leaves either the
    old file or the new one, never half of one."""
    import torch
    try:
        with open(path + '.tmp', 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + '.tmp', path)
    except (OSError, RuntimeError) as e:
        die(f"cannot write {path}: {os.strerror(e.errno) if getattr(e, 'errno', None) else e}")


def wandb_init(project, name, config):
    """Weights & Biases, imported only when a run asks for it: starts a run and returns the module
    (wandb.log, wandb.finish)."""
    try:
        import wandb
    except ImportError:
        die("--wandb_log=True needs the wandb package: pip install wandb")
    wandb.init(project=project, name=name, config=config)
    return wandb


def scalars(figures, prefix=''):
    """The numbers of nested figures, flat, named by their path: {'val': {'ce': 1.2}} -> {'val/ce': 1.2}
    (lists and None are left out)."""
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update(scalars(value, f'{prefix}{key}/'))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = value
    return out
