"""
Prepare tiny Shakespeare for character-level language modeling: map characters
to ints and write train.bin / val.bin (uint16) and meta.pkl (vocab_size, stoi,
itos), nanoGPT's format. input.txt is downloaded only when it is missing.
"""
import os
import pickle
import sys
import urllib.request

import numpy as np

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
here = os.path.dirname(os.path.abspath(__file__))
input_path = os.path.join(here, "input.txt")

if not os.path.exists(input_path):
    try:
        with urllib.request.urlopen(URL, timeout=30) as r:
            text = r.read().decode("utf-8")
    except OSError as e:
        sys.exit(f"error: could not download tiny Shakespeare ({e}); put the file at {input_path}")
    with open(input_path, "w", encoding="utf-8") as f:
        f.write(text)

with open(input_path, "r", encoding="utf-8") as f:
    data = f.read()
print(f"length of dataset in characters: {len(data):,}")

chars = sorted(set(data))
vocab_size = len(chars)
print(f"vocab size: {vocab_size}")
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for i, ch in enumerate(chars)}

n = len(data)
train_ids = np.array([stoi[c] for c in data[: int(n * 0.9)]], dtype=np.uint16)
val_ids = np.array([stoi[c] for c in data[int(n * 0.9):]], dtype=np.uint16)
print(f"train has {len(train_ids):,} tokens, val has {len(val_ids):,} tokens")
train_ids.tofile(os.path.join(here, "train.bin"))
val_ids.tofile(os.path.join(here, "val.bin"))
with open(os.path.join(here, "meta.pkl"), "wb") as f:
    pickle.dump({"vocab_size": vocab_size, "itos": itos, "stoi": stoi}, f)
