"""
Prepare OpenWebText as the paper's code does: GPT-2 BPE, every document followed by <|endoftext|>,
the stream wrapped into blocks of L = 1024 = [BOS] + 1022 ids + [EOS] with BOS = EOS = <|endoftext|>
(50256), packed group by group as the paper's code packs them (dataset.frame). The vocabulary is
K = 50258: GPT-2's 50257 and the pad token the paper's code adds (50257, never in the data).
Validation: the last 100,000 documents of OpenWebText's one split (the paper's openwebtext-valid,
train[-100000:]); training: the documents before them (openwebtext-train, train[:-100000]).
train.bin / val.bin hold the blocks one after the other (uint16); meta.pkl says GPT-2, K and
block_size = 1024, which makes train.py draw whole blocks.
Needs `pip install datasets` (only this script uses it), ~54 GB of disk in the Hugging Face cache,
and gives ~9B training tokens (~17 GB train.bin).

$ python data/openwebtext/prepare.py              # [--out_dir=FOLDER] [--num_proc=N]
$ python train.py config/train_owt.py
"""
import os
import pickle
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(here)))  # the repository root: dataset.py
import dataset as data  # noqa: E402

BLOCK_SIZE = 1024
VOCAB_SIZE = 50258      # GPT-2 and the pad token
VALID_DOCS = 100_000    # the last documents: the validation split
EOT = data.GPT2_EOT     # <|endoftext|>: EOS after each document, and BOS and EOS of each block


def tokenize(texts, enc):
    """Each document's ids followed by <|endoftext|>. The text of a special token inside a document is that
    token, as for the paper's (Hugging Face) GPT-2 tokenizer."""
    return [enc.encode(t, allowed_special={'<|endoftext|>'}) + [EOT] for t in texts]


def main(argv):
    out_dir, num_proc = data.hub_prepare_options(argv, here)
    try:  # only this script needs it
        import datasets
    except ImportError:
        sys.exit("error: preparing OpenWebText needs the datasets library: pip install datasets")
    enc = data.gpt2_encoding()
    try:
        owt = datasets.load_dataset("openwebtext", num_proc=num_proc)["train"]
    except Exception as e:
        sys.exit(f"error: cannot load openwebtext from the Hugging Face Hub: "
                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def process(batch):
        ids = tokenize(batch["text"], enc)
        return {"ids": ids, "len": [len(s) for s in ids]}

    os.makedirs(out_dir, exist_ok=True)
    n = len(owt)
    for name, rows in (("train", range(0, n - VALID_DOCS)), ("val", range(n - VALID_DOCS, n))):
        tokenized = owt.select(rows).map(process, batched=True, remove_columns=owt.column_names, num_proc=num_proc,
                                         desc=f"tokenizing {name}")
        data.write_blocks(tokenized, os.path.join(out_dir, f"{name}.bin"), EOT, EOT, BLOCK_SIZE)
    with open(os.path.join(out_dir, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": VOCAB_SIZE, "tokenizer": "gpt2", "block_size": BLOCK_SIZE}, f)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
