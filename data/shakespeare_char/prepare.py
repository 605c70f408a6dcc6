"""
Prepare a text file for character-level language modeling: map characters to ints and
write train.bin / val.bin (uint16, the first 90% / the last 10%) and meta.pkl
(vocab_size, stoi, itos), nanoGPT's format.

$ python data/shakespeare_char/prepare.py                  # tiny Shakespeare (downloads input.txt if missing)
$ python data/shakespeare_char/prepare.py --input=my.txt --out_dir=data/my_char
$ python train.py --dataset=data/my_char --out_dir=out-my-char
"""
import os
import pickle
import sys
import urllib.request

import numpy as np

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
here = os.path.dirname(os.path.abspath(__file__))
options = {"input": "", "out_dir": here}
for arg in sys.argv[1:]:
    key, _, value = arg[2:].partition("=")
    if not arg.startswith("--") or key not in options or not value:
        sys.exit(f"error: expected --input=FILE and/or --out_dir=FOLDER, got '{arg}'")
    options[key] = value
input_path, out_dir = options["input"] or os.path.join(here, "input.txt"), options["out_dir"]
if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    sys.exit(f"error: --out_dir={out_dir} is a file, not a folder")

if not options["input"] and not os.path.exists(input_path):
    try:
        with urllib.request.urlopen(URL, timeout=30) as r:
            text = r.read().decode("utf-8")
    except OSError as e:
        sys.exit(f"error: could not download tiny Shakespeare ({e}); put the file at {input_path}")
    with open(input_path, "w", encoding="utf-8") as f:
        f.write(text)

try:
    with open(input_path, "r", encoding="utf-8") as f:
        data = f.read()
except (OSError, UnicodeDecodeError) as e:
    sys.exit(f"error: cannot read {input_path} as UTF-8 text: {e}")
chars = sorted(set(data))
n = len(data)
if len(chars) > 65535 or int(n * 0.1) < 2:
    sys.exit(f"error: {input_path} has {n} characters and {len(chars)} distinct ones: it needs at least "
             f"20 characters (a tenth is validation) and at most 65535 distinct ones")
print(f"length of dataset in characters: {n:,}")
print(f"vocab size: {len(chars)}")
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for i, ch in enumerate(chars)}
train_ids = np.array([stoi[c] for c in data[: int(n * 0.9)]], dtype=np.uint16)
val_ids = np.array([stoi[c] for c in data[int(n * 0.9):]], dtype=np.uint16)
print(f"train has {len(train_ids):,} tokens, val has {len(val_ids):,} tokens")
files = {"train.bin": train_ids.tobytes(), "val.bin": val_ids.tobytes(),
         "meta.pkl": pickle.dumps({"vocab_size": len(chars), "itos": itos, "stoi": stoi})}
try:  # every file written first, then renamed: good data is never replaced by a half-written file
    os.makedirs(out_dir, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(out_dir, name + ".tmp"), "wb") as f:
            f.write(content)
    for name in files:
        os.replace(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))
except OSError as e:
    sys.exit(f"error: cannot write the data in {out_dir}: {e}")
print(f"wrote {out_dir}")
