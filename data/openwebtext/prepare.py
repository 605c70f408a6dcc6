"""
Prepare OpenWebText with GPT-2 BPE: train.bin / val.bin of uint16 token ids, each
document followed by <|endoftext|> (nanoGPT's format; no meta.pkl means GPT-2 BPE).
Needs `pip install datasets` (only this script uses it), ~54 GB of disk in the
Hugging Face cache, and gives ~9B training tokens (~17 GB train.bin).
"""
import os
import sys

import numpy as np
import tiktoken

try:
    from datasets import load_dataset
except ImportError:
    sys.exit("error: preparing OpenWebText needs the datasets library: pip install datasets")

num_proc = max(1, os.cpu_count() // 2)
enc = tiktoken.get_encoding("gpt2")
here = os.path.dirname(os.path.abspath(__file__))


def process(example):
    ids = enc.encode_ordinary(example["text"])
    ids.append(enc.eot_token)
    return {"ids": ids, "len": len(ids)}


if __name__ == "__main__":
    dataset = load_dataset("openwebtext", num_proc=num_proc)
    split = dataset["train"].train_test_split(test_size=0.0005, seed=2357, shuffle=True)
    split["val"] = split.pop("test")
    tokenized = split.map(process, remove_columns=["text"], desc="tokenizing", num_proc=num_proc)
    for name, dset in tokenized.items():
        arr_len = np.sum(dset["len"], dtype=np.uint64)
        path = os.path.join(here, f"{name}.bin")
        arr = np.memmap(path + ".tmp", dtype=np.uint16, mode="w+", shape=(arr_len,))
        idx, shards = 0, 1024
        for i in range(shards):
            batch = dset.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")
            ids = np.concatenate(batch["ids"])
            arr[idx:idx + len(ids)] = ids
            idx += len(ids)
        arr.flush()
        os.replace(path + ".tmp", path)  # a half-written file is never mistaken for data
        print(f"{name}: {arr_len:,} tokens -> {path}")
