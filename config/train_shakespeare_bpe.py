# An FLM at GPT-2's vocabulary (K = 50257) on tiny Shakespeare's BPE tokens (data/shakespeare,
# ~302k training tokens), within 20 minutes on a 2-core CPU. At this K the output layer is most of
# the work (its (B, L, K) logits, as in an AR model: the input side runs in d dims, method.md 7);
# 700 steps of 8 x 128 tokens are ~1.9 passes over the data.
# $ python data/shakespeare/prepare.py
# $ python train.py config/train_shakespeare_bpe.py
# The baselines with the same network, data and budget (add --seed=... for a judge):
# $ python train.py config/train_shakespeare_bpe.py --kind=ar --out_dir=out-shakespeare-bpe-ar
out_dir = 'out-shakespeare-bpe'
dataset = 'shakespeare'
batch_size = 8
block_size = 128
n_layer = 4
n_head = 4
n_embd = 128
n_cond = 128
learning_rate = 2e-3
warmup_iters = 50
max_iters = 700
lr_decay_iters = 700
min_lr = 1e-4
ema_decay = 0.99
eval_interval = 175
eval_iters = 4
log_interval = 10
