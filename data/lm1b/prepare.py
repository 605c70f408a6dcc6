"""
Prepare LM1B (the One Billion Word benchmark) as the paper's code does: bert-base-uncased ids
(K = 30522), every sentence detokenized and followed by its EOS, the stream wrapped into blocks of
L = 128 = [CLS] + 126 ids + [CLS]. The paper's dataloader takes BOS and EOS as the first id that the
tokenizer gives for its bos/eos token, which for BERT (no BOS or EOS of its own: [CLS] and [SEP] stand
in) is the [CLS] that encode() puts in front: BOS = EOS = [CLS] (101); [SEP] never occurs.

    [CLS] sentence 1 [CLS] sentence 2 [CLS] the start of sentence 3 [CLS]
    [CLS] the rest of sentence 3 [CLS] sentence 4 [CLS] ...          [CLS]

Blocks are packed group by group as the paper's code packs them (dataset.frame): each group's last
ids that do not fill a block are dropped. train.bin / val.bin hold the blocks one after the other
(uint16), val.bin from LM1B's test split (the paper's validation set); meta.pkl names the tokenizer
(so that sample.py decodes) and block_size = 128, which makes train.py draw whole blocks.
Needs `pip install datasets transformers` (only this script imports datasets) and ~16 GB of
disk in the Hugging Face cache; LM1B has 30M training sentences (~0.8B words).

$ python data/lm1b/prepare.py                     # [--out_dir=FOLDER] [--num_proc=N]
$ python train.py config/train_lm1b.py
"""
import os
import pickle
import re
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(here)))  # the repository root: dataset.py
import dataset as data  # noqa: E402
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


def tokenize(texts, tokenizer, eos):
    """Each sentence's ids (detokenized, no special tokens), followed by eos. tokenizer: a transformers
    tokenizer, or anything called the same way."""
    ids = tokenizer([detokenize(t) for t in texts], add_special_tokens=False)["input_ids"]
    return [s + [eos] for s in ids]


def reference_eos(tokenizer):
    """(BOS, EOS) as the paper's dataloader takes them: the first id of encode(bos_token) and of
    encode(eos_token), where BERT's missing BOS and EOS are [CLS] and [SEP]. encode adds [CLS] in front,
    so both are [CLS]."""
    bos, eos = tokenizer.bos_token or tokenizer.cls_token, tokenizer.eos_token or tokenizer.sep_token
    return tokenizer.encode(bos)[0], tokenizer.encode(eos)[0]


def main(argv):
    out_dir, num_proc = data.hub_prepare_options(argv, here)
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
    bos, eos = reference_eos(tokenizer)

    def process(batch):
        ids = tokenize(batch["text"], tokenizer, eos)
        return {"ids": ids, "len": [len(s) for s in ids]}

    os.makedirs(out_dir, exist_ok=True)
    for split, name in (("train", "train"), ("test", "val")):  # LM1B's test split is the validation set
        tokenized = lm1b[split].map(process, batched=True, remove_columns=lm1b[split].column_names,
                                    num_proc=num_proc, desc=f"tokenizing {split}")
        data.write_blocks(tokenized, os.path.join(out_dir, f"{name}.bin"), bos, eos, BLOCK_SIZE)
    with open(os.path.join(out_dir, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": len(tokenizer), "tokenizer": TOKENIZER, "block_size": BLOCK_SIZE}, f)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
