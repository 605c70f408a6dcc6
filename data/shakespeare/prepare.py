"""
Prepare tiny Shakespeare with GPT-2 BPE (tiktoken): train.bin / val.bin of uint16 token ids
(the first 90% / the last 10% of the text), and no meta.pkl, which means GPT-2 BPE (K = 50257).
nanoGPT's `shakespeare` dataset. input.txt is read from here, or from
data/shakespeare_char/input.txt, and downloaded only when neither exists.

$ python data/shakespeare/prepare.py
$ python train.py config/train_shakespeare_bpe.py
"""
import os
import shutil
import subprocess
import sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", ".."))
from dataset import gpt2_encoding  # noqa: E402
input_path = os.path.join(here, "input.txt")
if not os.path.exists(input_path):
    chars = os.path.join(here, "..", "shakespeare_char")
    if not os.path.exists(os.path.join(chars, "input.txt")):  # its script downloads it
        if subprocess.run([sys.executable, os.path.join(chars, "prepare.py")]).returncode != 0:
            sys.exit(1)
    shutil.copyfile(os.path.join(chars, "input.txt"), input_path)
try:
    with open(input_path, "r", encoding="utf-8") as f:
        data = f.read()
except (OSError, UnicodeDecodeError) as e:
    sys.exit(f"error: cannot read {input_path} as UTF-8 text: {e}")
n = len(data)
if int(n * 0.1) < 2:  # checked before the tokenizer is loaded, and before anything is written
    sys.exit(f"error: {input_path} has {n} characters: it needs at least 20 (a tenth is validation); "
             f"nothing written")
enc = gpt2_encoding()
splits = {"train": enc.encode_ordinary(data[: int(n * 0.9)]), "val": enc.encode_ordinary(data[int(n * 0.9):])}
if min(len(ids) for ids in splits.values()) < 2:
    sys.exit(f"error: {input_path} gives {len(splits['train'])} train and {len(splits['val'])} val tokens: "
             f"each split needs at least 2; nothing written")
print(f"train has {len(splits['train']):,} tokens, val has {len(splits['val']):,} tokens")
try:  # both files written first, then renamed: good data is never replaced by a half-written file
    for name, ids in splits.items():
        np.array(ids, dtype=np.uint16).tofile(os.path.join(here, f"{name}.bin.tmp"))
    for name in splits:
        os.replace(os.path.join(here, f"{name}.bin.tmp"), os.path.join(here, f"{name}.bin"))
except OSError as e:
    sys.exit(f"error: cannot write the data in {here}: {e}")
