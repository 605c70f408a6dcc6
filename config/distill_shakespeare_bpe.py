# The default distillation (method.md 5, as config/distill_shakespeare_char.py) of the GPT-2 BPE
# Shakespeare FLM (config/train_shakespeare_bpe.py) into a one-step flow map:
# $ python train.py config/distill_shakespeare_bpe.py --teacher=out-shakespeare-bpe/ckpt.pt
# $ python sample.py --out_dir=out-shakespeare-bpe-fm            # one-step samples
kind = 'flowmap'
out_dir = 'out-shakespeare-bpe-fm'
dataset = 'shakespeare'
batch_size = 8
block_size = 128
max_iters = 400
lr_decay_iters = 400
eval_interval = 100
log_interval = 10
learning_rate = 1e-3
warmup_iters = 50
ema_decay = 0.99          # ~100 steps averaged
boundary_every = 64       # the paper's: the whole jump (0, 1) in 1 of 64 jump samples
diagonal_share = 0.5      # the paper's code: half the sequences on the teacher's denoiser
loss_weighting = False
eval_samples = 16
