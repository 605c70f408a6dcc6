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
with open(input_path, "r", encoding="utf-8") as f:
    data = f.read()
n = len(data)
enc = gpt2_encoding()
train_ids = np.array(enc.encode_ordinary(data[: int(n * 0.9)]), dtype=np.uint16)
val_ids = np.array(enc.encode_ordinary(data[int(n * 0.9):]), dtype=np.uint16)
print(f"train has {len(train_ids):,} tokens, val has {len(val_ids):,} tokens")
train_ids.tofile(os.path.join(here, "train.bin"))
val_ids.tofile(os.path.join(here, "val.bin"))
