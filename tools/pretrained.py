"""
The paper's released checkpoints (Lee et al. 2026), loaded into this project's network flm.FLM.

The authors saved their DiT with huggingface_hub's PyTorchModelHubMixin: a folder (or hub repo)
holding config.json (their whole hydra config plus vocab_size) and model.safetensors.

  FLM-B-OWT, FMLM-B-OWT    OpenWebText, L = 1024, GPT-2 BPE plus a pad token: K = 50258
  FLM-B-LM1B, FMLM-B-LM1B  LM1B, L = 128, bert-base-uncased: K = 30522
  (each is david3684/<name> on the hub; an FLM samples with the Euler sampler, an FMLM is a
  two-time flow map whose one jump 0 -> 1 is one-step text)

    import flm, pretrained
    p = pretrained.load_pretrained('FMLM-B-OWT', 'cuda')  # or 'owner/name', or a local folder
    table = flm.g_table(p.vocab_size, 'cuda')             # G for K = 50258: the reference's G
    x = flm.euler_sample(p.model, table, (4, p.block_size, p.vocab_size), steps=1,
                         device='cuda', flow_map=p.kind == 'stage2')
    print(p.decode(x[0].tolist()))

The mapping onto flm.FLM: the reference's LayerNorms have a learnable scale, its attention
logits are soft-capped at 50 and its time embedding reads the raw t: FLMConfig's ln_scale,
attn_softcap and time_scale. Its output logits go to the softmax as they are (algo.py, FLMBase
_process_model_output; a cap at 30 there lived only in the code's first commits, up to 83c3849).
Everything else is this project's network already (tests/test_pretrained.py checks the outputs
against the reference's on tiny random weights). The time t is the same in both: the
fraction of decodable tokens, 0 = noise, 1 = data, and g = G(t) with K counting the pad token.

huggingface_hub (downloads only), safetensors and transformers (the BERT tokenizer only) are
optional: each is imported when needed, and a missing one is a one-line error.
"""

import functools
import json
import os
from dataclasses import dataclass

import torch

import dataset as data
import flm
from configurator import die

SHORT_NAMES = ('FLM-B-OWT', 'FMLM-B-OWT', 'FLM-B-LM1B', 'FMLM-B-LM1B')
OWNER = 'david3684'
FILES = ('config.json', 'model.safetensors')
GPT2_PAD = 50257  # the pad token the reference appends to GPT-2's 50257 tokens: K = 50258
# the tokenizers the releases were trained with, by (the config's name, K)
TOKENIZERS = {('gpt2', 50258): 'gpt2', ('bert-base-uncased', 30522): 'bert-base-uncased'}


def _require(module, package):
    try:
        return __import__(module, fromlist=['_'])
    except ImportError:
        die(f"this needs the '{package}' package: pip install {package}")


def _files(name_or_folder):
    """(source, folder) holding config.json and model.safetensors: a local folder as it is,
    anything else downloaded from the hub (a short name is one of the authors' repos)."""
    if os.path.isdir(name_or_folder):
        folder = name_or_folder
        for f in FILES:
            if not os.path.isfile(os.path.join(folder, f)):
                die(f"{folder} has no {f}: a released checkpoint's folder holds {' and '.join(FILES)}")
        return folder, folder
    repo = f"{OWNER}/{name_or_folder}" if name_or_folder in SHORT_NAMES else name_or_folder
    if repo.count('/') != 1:
        die(f"'{name_or_folder}' is not a folder, nor one of {', '.join(SHORT_NAMES)}, nor owner/name on the hub")
    hub = _require('huggingface_hub', 'huggingface_hub')
    try:
        paths = [hub.hf_hub_download(repo, f) for f in FILES]
    except Exception as e:
        die(f"cannot download {repo} from the hub: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return repo, os.path.dirname(paths[0])


def _model_args(config, two_times, src):
    """FLMConfig's arguments for the reference's config.json."""
    try:
        model, algo = config['model'], config['algo']
        if algo.get('causal_attention'):
            die(f"{src}: a causal (autoregressive) DiT, not an FLM or FMLM")
        if algo.get('name') == 'flm_distill':
            die(f"{src}: a stage-1 residual network (algo.name flm_distill): it samples only with its teacher")
        return dict(vocab_size=int(config['vocab_size']), block_size=int(model['length']),
                    n_layer=int(model['n_blocks']), n_head=int(model['n_heads']),
                    n_embd=int(model['hidden_size']), n_cond=int(model['cond_dim']),
                    dropout=float(model.get('dropout', 0.0)), two_times=two_times,
                    ln_scale=True, attn_softcap=50.0, time_scale=1.0)
    except (KeyError, TypeError, ValueError) as e:
        die(f"{src}: config.json lacks or garbles the field {e}")


# flm.FLM's state-dict names -> the reference DIT's: the top-level modules, then inside a block
# (blocks.i.mlp.0 and blocks.i.mlp.2 have the same names in both)
TOP = {'embed.weight': 'vocab_embed.embedding', 'time_embed.': 'sigma_map.', 'time_embed2.': 'sigma_map_prime.',
       'ln_f.': 'output_layer.norm_final.', 'adaLN_f.': 'output_layer.adaLN_modulation.',
       'head.': 'output_layer.linear.'}
IN_BLOCK = {'.ln1.': '.norm1.', '.ln2.': '.norm2.', '.attn.qkv.': '.attn_qkv.', '.attn.proj.': '.attn_out.',
            '.adaLN.': '.adaLN_modulation.'}


def reference_name(key):
    """The reference DIT's name for a key of flm.FLM's state dict."""
    for ours, theirs in TOP.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    for ours, theirs in IN_BLOCK.items():
        key = key.replace(ours, theirs)
    return key


@dataclass
class Pretrained:
    kind: str             # 'flm' (Euler sampler) or 'stage2' (a flow map: euler_sample(flow_map=True))
    model: flm.FLM        # in eval mode, on the device
    model_args: dict      # FLMConfig(**model_args) builds the same network
    tokenizer: str        # 'gpt2' (tiktoken), 'bert-base-uncased' (transformers) or None
    block_size: int       # L
    vocab_size: int       # K, the pad token included: G is flm.g_table(vocab_size)
    source: str           # the folder or hub repo

    def decode(self, ids):
        """Token ids -> text, as the paper's code decodes its samples (dataset.gpt2_text, bert_text: GPT-2's
        pad id, never in the training data, is '[PAD]'); without a tokenizer, the ids themselves."""
        if self.tokenizer == 'gpt2':
            return data.gpt2_text(ids, _gpt2(), pad=GPT2_PAD)
        if self.tokenizer == 'bert-base-uncased':
            return data.bert_text(ids, _bert_tokens())
        return ' '.join(str(i) for i in ids)

    def encode(self, text):
        """Text -> token ids (a prompt), with the release's tokenizer."""
        if self.tokenizer == 'gpt2':
            return _gpt2().encode(text, allowed_special={'<|endoftext|>'})
        if self.tokenizer == 'bert-base-uncased':
            return _bert().encode(text, add_special_tokens=False)
        if text:
            die(f"{self.source} has no known tokenizer: it cannot take a prompt")
        return []


@functools.lru_cache(maxsize=None)
def _gpt2():
    return _require('tiktoken', 'tiktoken').get_encoding('gpt2')


@functools.lru_cache(maxsize=None)
def _bert():
    return _require('transformers', 'transformers').AutoTokenizer.from_pretrained('bert-base-uncased')


@functools.lru_cache(maxsize=None)
def _bert_tokens():
    return _bert().convert_ids_to_tokens(list(range(len(_bert()))))


def load_pretrained(name_or_folder, device='cpu'):
    """A released FLM or FMLM (a short name, owner/name on the hub, or a local folder in the same
    layout) as a Pretrained: the kind, the network, its tokenizer, L and K."""
    source, folder = _files(name_or_folder)
    st = _require('safetensors.torch', 'safetensors')
    try:
        with open(os.path.join(folder, 'config.json'), encoding='utf-8') as f:
            config = json.load(f)
        weights = st.load_file(os.path.join(folder, 'model.safetensors'))
    except Exception as e:
        die(f"cannot read {source}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    # an FMLM has a second time embedding (the reference's sigma_map_prime), an FLM has none
    two_times = any(k.startswith('sigma_map_prime.') for k in weights)
    args = _model_args(config, two_times, source)
    net = flm.FLM(flm.FLMConfig(**args))

    # Not needed for sampling: the rotary frequencies (the reference stores them as a buffer;
    # this network computes the same ones) and the training-only learnable loss weighting.
    inv_freq = weights.pop('rotary_emb.inv_freq', None)
    hd = args['n_embd'] // args['n_head']
    expected = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)
    if (inv_freq is None or inv_freq.shape != expected.shape
            or not torch.allclose(inv_freq.float(), expected, rtol=1e-2)):  # 1e-2: a bf16 file rounds it
        die(f"{source}: the rotary frequencies 'rotary_emb.inv_freq' are missing or not base 10000 over {hd} dims")
    for k in [k for k in weights if k.startswith('learnable_loss_weighting.')]:
        del weights[k]

    names = {key: reference_name(key) for key in net.state_dict()}
    missing = [n for n in names.values() if n not in weights]
    unexpected = sorted(set(weights) - set(names.values()))
    if unexpected:  # a renamed weight is both: name the stranger first
        die(f"{source}: unexpected weight '{unexpected[0]}', not one of the reference DiT's"
            + (f" (missing: '{missing[0]}')" if missing else ''))
    if missing:
        die(f"{source}: the weight '{missing[0]}' is missing")
    state = {}
    for key, p in net.state_dict().items():
        w = weights[names[key]].float()
        if key == 'embed.weight':
            w = w.t()  # the reference embeds x_g @ E with E (K, d); a Linear holds E^T
        if w.shape != p.shape:
            die(f"{source}: the weight '{names[key]}' of shape {tuple(weights[names[key]].shape)} "
                "does not fit config.json's sizes")
        state[key] = w
    net.load_state_dict(state)
    data = config.get('data') or {}
    tokenizer = TOKENIZERS.get((data.get('tokenizer_name_or_path'), args['vocab_size']))
    return Pretrained(kind='stage2' if two_times else 'flm', model=net.eval().to(device), model_args=args,
                      tokenizer=tokenizer, block_size=args['block_size'], vocab_size=args['vocab_size'],
                      source=source)
