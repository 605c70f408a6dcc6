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

The other way: a train.py checkpoint of the paper's network (an FLM, or a one-network flow map of
kind stage2 or flowmap) exported to the same layout, which load_pretrained, and the reference's
own DIT.from_pretrained, load:
$ python -m tools.pretrained export --ckpt=out-owt/ckpt.pt --out=flm-owt   # [--weights=ema|model]

A release also serves train.py as a teacher (--teacher=FLM-B-OWT, or its folder) and as the start
of an FLM run (--init_from=FLM-B-OWT): release_as_checkpoint.

huggingface_hub (downloads only), safetensors and transformers (the BERT tokenizer only) are
optional: each is imported when needed, and a missing one is a one-line error.
"""

import functools
import json
import os
import sys
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
    if os.path.isfile(name_or_folder):
        die(f"{name_or_folder} is a file: a released checkpoint is a name, owner/name on the hub or a folder")
    repo = f"{OWNER}/{name_or_folder}" if name_or_folder in SHORT_NAMES else name_or_folder
    if repo.count('/') != 1:
        die(f"'{name_or_folder}' is not a folder, nor one of {', '.join(SHORT_NAMES)}, nor owner/name on the hub")
    if (repo.endswith(('.pt', '.pth', '.safetensors', '.json')) or repo.startswith(('.', '~'))
            or os.path.isdir(repo.split('/')[0])):  # a mistyped path is no name to look up online
        die(f"{name_or_folder}: no such folder")
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
        args = dict(vocab_size=int(config['vocab_size']), block_size=int(model['length']),
                    n_layer=int(model['n_blocks']), n_head=int(model['n_heads']),
                    n_embd=int(model['hidden_size']), n_cond=int(model['cond_dim']),
                    dropout=float(model.get('dropout', 0.0)), two_times=two_times,
                    ln_scale=True, attn_softcap=50.0, time_scale=1.0, embed_dropout=False)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        die(f"{src}: config.json lacks or garbles the field {e}")
    sizes = ('vocab_size', 'block_size', 'n_layer', 'n_head', 'n_embd', 'n_cond')
    if min(args[k] for k in sizes) <= 0 or args['n_embd'] % (2 * args['n_head']) or not 0 <= args['dropout'] < 1:
        die(f"{src}: config.json's sizes must be > 0, with hidden_size split into n_heads heads of even width; "
            f"got {', '.join(f'{k}={args[k]}' for k in sizes)}")
    return args


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


def names_a_release(name):
    """Whether name can be a release: a folder, a short name, or owner/name (not a train.py checkpoint)."""
    return os.path.isdir(name) or name in SHORT_NAMES or (
        name.count('/') == 1 and not name.endswith('.pt') and not os.path.exists(name))


def release_as_checkpoint(name_or_folder, flag, vocab_size, block_size, device='cpu'):
    """A released FLM (a short name, owner/name or a folder) in the form of a train.py checkpoint's
    fields that a teacher or a starting network is read from: kind, model_args, ema. One-line errors
    for an FMLM, or a release whose K or L differs from the run's data."""
    p = load_pretrained(name_or_folder, device)
    if p.kind != 'flm':
        die(f"{flag}={name_or_folder} is a flow map (FMLM), not an FLM")
    if (p.vocab_size, p.block_size) != (vocab_size, block_size):
        die(f"{flag}={name_or_folder} has vocab_size={p.vocab_size}, block_size={p.block_size}; "
            f"this run's data has {vocab_size}, {block_size} (data/openwebtext and data/lm1b/prepare.py write the "
            "releases' data)")
    return {'kind': 'flm', 'model_args': p.model_args, 'ema': p.model.state_dict(), 'source': p.source}

# -----------------------------------------------------------------------------
# Export: a train.py checkpoint in the release layout

# the switches that make flm.FLM the reference's DiT: the layout implies them (load_pretrained sets them)
PAPER_NETWORK = {'ln_scale': True, 'attn_softcap': 50.0, 'time_scale': 1.0}
# the reference's learnable loss weighting reads s alone: of a w(s, t) (learn_loss_weight = 2) only the
# s part has a place in the layout; w is for training only, sampling never reads it
LOSS_WEIGHT = {'loss_weight.embed_s.': 'learnable_loss_weighting.s_embed.',
               'loss_weight.mlp.': 'learnable_loss_weighting.mlp.', 'loss_weight.embed_t.': None}
# this project's tokenizers, by meta.pkl's name, under the reference's config names
TOKENIZER_NAMES = {'gpt2': 'gpt2', 'bert-base-uncased': 'bert-base-uncased'}


def release_weights(state_dict, model_args):
    """flm.FLM's state dict -> the reference DIT's (its names, E as (K, d), the rotary buffer)."""
    out = {}
    for key, w in state_dict.items():
        prefix = next((p for p in LOSS_WEIGHT if key.startswith(p)), None)
        if prefix is not None:
            if LOSS_WEIGHT[prefix] is not None:
                out[LOSS_WEIGHT[prefix] + key[len(prefix):]] = w
            continue
        out[reference_name(key)] = w.t() if key == 'embed.weight' else w
    hd = model_args['n_embd'] // model_args['n_head']
    out['rotary_emb.inv_freq'] = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def release_config(ckpt):
    """config.json of a train.py checkpoint: the reference's fields (its hydra config's groups, as its
    PyTorchModelHubMixin saves them, plus vocab_size), filled from the run's options."""
    a, c, meta = ckpt['model_args'], ckpt['config'], ckpt.get('meta', {})
    two_times = bool(a.get('two_times'))
    weighted = bool(a.get('learn_loss_weight'))
    name = os.path.basename(os.path.normpath(c.get('dataset', '')))
    tokenizer = TOKENIZER_NAMES.get(meta.get('tokenizer'), name)  # data/<name> otherwise
    return {
        'algo': {'name': 'flm_distill_double' if two_times else 'flm', 'backbone': 'dit', 'parameterization': 'mean',
                 'time_conditioning': True, 'T': 0, 'subs_masking': False, 'causal_attention': False,
                 'ignore_bos': False, 't_min': 0.0, 't_max': 1.0, 'double_temb': two_times,
                 'learnable_loss_weighting': weighted},
        'model': {'name': 'small', 'type': 'ddit', 'hidden_size': a['n_embd'], 'cond_dim': a['n_cond'],
                  'length': a['block_size'], 'n_blocks': a['n_layer'], 'n_heads': a['n_head'],
                  'dropout': a.get('dropout', 0.0), 'scale_by_sigma': True, 'tie_word_embeddings': False,
                  'vocab_lookup': True},
        'data': {'train': name, 'valid': name, 'tokenizer_name_or_path': tokenizer, 'wrap': True,
                 'insert_train_eos': True, 'insert_valid_eos': True, 'streaming': False},
        'loader': {'global_batch_size': c.get('batch_size', 0) * c.get('gradient_accumulation_steps', 1)},
        'optim': {'lr': c.get('learning_rate'), 'beta1': c.get('beta1'), 'beta2': c.get('beta2'), 'eps': 1e-8,
                  'weight_decay': c.get('weight_decay')},
        'training': {'ema': c.get('ema_decay')},
        'trainer': {'max_steps': c.get('max_iters'), 'gradient_clip_val': c.get('grad_clip')},
        'lr_scheduler': {'num_warmup_steps': c.get('warmup_iters')},
        'seed': c.get('seed'),
        'vocab_size': a['vocab_size'],
    }


def export(ckpt_path, out, weights='ema'):
    """Write a train.py checkpoint (an FLM, or a stage-2 or flowmap flow map, of the paper's network) to the
    folder out as config.json and model.safetensors (float32)."""
    from tools import runs  # here: runs reads releases through this module
    st = _require('safetensors.torch', 'safetensors')
    if weights not in ('ema', 'model'):
        die(f"--weights must be ema or model, got '{weights}'")
    ckpt = runs.load_checkpoint(ckpt_path, '--ckpt')
    if ckpt['kind'] not in ('flm', 'stage2', 'flowmap'):
        die(f"--ckpt={ckpt_path} is a '{ckpt['kind']}' checkpoint; the release layout holds an FLM or a one-network "
            "flow map (stage2, flowmap)")
    args = {**flm.FLMConfig().__dict__, **ckpt['model_args']}
    off = [f"{k}={args[k]!r}" for k, v in PAPER_NETWORK.items() if args[k] != v]
    if off:
        die(f"--ckpt={ckpt_path} has {', '.join(off)}: the release layout is the paper's network "
            f"({', '.join(f'{k}={v!r}' for k, v in PAPER_NETWORK.items())}, as config/train_owt.py sets them)")
    os.makedirs(out, exist_ok=True)
    st.save_file(release_weights(ckpt[weights], args), os.path.join(out, 'model.safetensors'),
                 metadata={'format': 'pt'})
    with open(os.path.join(out, 'config.json'), 'w', encoding='utf-8') as f:
        json.dump(release_config(ckpt), f, indent=2, sort_keys=True)
    print(f"wrote {out}: config.json, model.safetensors ({ckpt['kind']}, {weights} weights)")


def main(argv):
    options = {'ckpt': '', 'out': '', 'weights': 'ema'}
    if not argv or argv[0] != 'export':
        die("usage: python -m tools.pretrained export --ckpt=out-owt/ckpt.pt --out=FOLDER [--weights=ema|model]")
    for arg in argv[1:]:
        key, _, value = arg[2:].partition('=')
        if not arg.startswith('--') or key not in options or not value:
            die(f"expected --ckpt=PATH, --out=FOLDER, --weights=ema|model; got '{arg}'")
        options[key] = value
    if not options['ckpt'] or not options['out']:
        die("export needs --ckpt=PATH and --out=FOLDER")
    export(options['ckpt'], options['out'], options['weights'])


if __name__ == '__main__':
    main(sys.argv[1:])
