"""
Prepare LM1B (the One Billion Word benchmark) as the paper does: bert-base-uncased ids
(K = 30522) packed into blocks of L = 128, each block [CLS] + 126 ids of the sentence stream
+ [SEP], where every sentence is detokenized and followed by [SEP]:

    [CLS] sentence 1 [SEP] sentence 2 [SEP] the start of sentence 3 [SEP]
    [CLS] the rest of sentence 3 [SEP] sentence 4 [SEP] ...               [SEP]

train.bin / val.bin hold the blocks one after the other (uint16), val.bin from LM1B's test
split; meta.pkl names the tokenizer (so that sample.py decodes) and block_size = 128, which
makes train.py draw whole blocks (dataset.get_batch), never a window across two.
Needs `pip install datasets transformers` (only this script imports datasets) and ~16 GB of
disk in the Hugging Face cache; LM1B has 30M training sentences (~0.8B words).

$ python data/lm1b/prepare.py                     # [--out_dir=FOLDER] [--num_proc=N]
$ python train.py --dataset=lm1b --block_size=128 ...
"""
import os
import pickle
import re
import sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = "bert-base-uncased"
BLOCK_SIZE = 128
# the Parquet export of the Hub's lm1b (its loading script does not run in datasets >= 4)
SOURCE, REVISION = "billion-word-benchmark/lm1b", "refs/convert/parquet"

# LM1B's text is tokenized ("it 's here , he said ."); the paper's pipeline joins it back before
# BERT's tokenizer sees it, with these rules, applied in this order (regex, replacement)
DETOKENIZER = [(re.compile(p), r) for p, r in [
    (r"http : / / ", "http://"), (r"https : / / ", "https://"),
    (r" '(\w+)", r"'\1"),                                   # it 's -> it's
    (r" (\w+) \. ", r" \1. "), (r" (\w+) \.$", r" \1."),   # a full stop after a word
    (r" \? ", "? "), (r" \?$", "?"), (r" ! ", "! "), (r" !$", "!"),
    (r" , ", ", "), (r" : ", ": "), (r" ; ", "; "), (r" / ", "/"),
    (r'" ([^"]+) "', r'"\1"'), (r"' ([^']+) '", r"'\1'"),  # quotes and brackets hug their text
    (r"\( ([^()]+) \)", r"(\1)"), (r"\[ ([^\[\]]+) \]", r"[\1]"),
    (r"\$ ", "$"), (r"£ ", "£"),
]]


def detokenize(text):
    for pattern, replacement in DETOKENIZER:
        text = pattern.sub(replacement, text)
    return text


def tokenize(texts, tokenizer):
    """Each sentence's ids (detokenized, no special tokens), followed by [SEP]. tokenizer: a
    transformers tokenizer, or anything called the same way with sep_token_id."""
    ids = tokenizer([detokenize(t) for t in texts], add_special_tokens=False)["input_ids"]
    return [s + [tokenizer.sep_token_id] for s in ids]


def pack(stream, cls, sep, block_size=BLOCK_SIZE):
    """The token stream (1-d ids) in blocks (n, block_size) of [CLS] + block_size - 2 ids + [SEP];
    the last ids that do not fill a block are left out (see pack_pieces)."""
    inner = block_size - 2
    n = len(stream) // inner
    blocks = np.empty((n, block_size), dtype=np.uint16)
    blocks[:, 0], blocks[:, -1] = cls, sep
    blocks[:, 1:-1] = np.asarray(stream[:n * inner]).reshape(n, inner)
    return blocks


def pack_pieces(pieces, cls, sep, block_size=BLOCK_SIZE):
    """pack() of a stream that comes in pieces (1-d id arrays): yields each piece's full blocks and
    carries what is left into the next piece, so the blocks are those of the whole stream. Only the
    stream's last < block_size - 2 ids are dropped (the paper's code drops a remainder per map batch)."""
    carry = np.zeros(0, dtype=np.uint16)
    for piece in pieces:
        stream = np.concatenate([carry, np.asarray(piece, dtype=np.uint16)])
        blocks = pack(stream, cls, sep, block_size)
        carry = stream[blocks.shape[0] * (block_size - 2):]
        yield blocks


def write_split(dset, path, cls, sep):
    """The blocks of a tokenized split (columns ids, len) into path, written via a temporary file."""
    n_blocks = int(np.sum(dset["len"], dtype=np.uint64)) // (BLOCK_SIZE - 2)
    arr = np.memmap(path + ".tmp", dtype=np.uint16, mode="w+", shape=(n_blocks * BLOCK_SIZE,))
    shards = min(1024, len(dset))
    # list(): a shard's ids are an array of arrays, or a 2-d array if its sentences are of one length
    pieces = (np.concatenate(list(dset.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")["ids"]))
              for i in range(shards))
    idx = 0
    for blocks in pack_pieces(pieces, cls, sep):
        arr[idx:idx + blocks.size] = blocks.ravel()
        idx += blocks.size
    assert idx == arr.size
    arr.flush()
    os.replace(path + ".tmp", path)  # a half-written file is never mistaken for data
    print(f"{os.path.basename(path)}: {n_blocks:,} blocks of {BLOCK_SIZE} = {arr.size:,} tokens")


def main(argv):
    options = {"out_dir": here, "num_proc": str(max(1, (os.cpu_count() or 2) // 2))}
    for arg in argv:
        key, _, value = arg[2:].partition("=")
        if not arg.startswith("--") or key not in options or not value:
            sys.exit(f"error: expected --out_dir=FOLDER and/or --num_proc=N, got '{arg}'")
        options[key] = value
    if not options["num_proc"].isdigit() or int(options["num_proc"]) < 1:
        sys.exit(f"error: --num_proc takes a whole number >= 1, got '{options['num_proc']}'")
    out_dir, num_proc = options["out_dir"], int(options["num_proc"])
    try:  # only this script needs them
        import datasets
        import transformers
    except ImportError as e:
        sys.exit(f"error: preparing LM1B needs the datasets and transformers libraries ({e.name} is missing): "
                 f"pip install datasets transformers")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(TOKENIZER)
        lm1b = datasets.load_dataset(SOURCE, revision=REVISION, num_proc=num_proc)
    except Exception as e:
        sys.exit(f"error: cannot load {TOKENIZER} or {SOURCE} from the Hugging Face Hub: "
                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def process(batch):
        ids = tokenize(batch["text"], tokenizer)
        return {"ids": ids, "len": [len(s) for s in ids]}

    os.makedirs(out_dir, exist_ok=True)
    for split, name in (("train", "train"), ("test", "val")):  # LM1B's test split is the validation set
        tokenized = lm1b[split].map(process, batched=True, remove_columns=lm1b[split].column_names,
                                    num_proc=num_proc, desc=f"tokenizing {split}")
        write_split(tokenized, os.path.join(out_dir, f"{name}.bin"), cls, sep)
    with open(os.path.join(out_dir, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": len(tokenizer), "tokenizer": TOKENIZER, "block_size": BLOCK_SIZE}, f)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
