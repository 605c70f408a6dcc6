# The default distillation of the tiny Shakespeare FLM into a one-step flow map: one network h_psi
# on a KL semigroup target (method.md 5), 27 minutes on 2 CPU cores. Its checkpoint carries no
# teacher (its sampler needs none):
# python train.py config/distill_shakespeare_char.py --teacher=out-shakespeare-char/ckpt.pt
# python sample.py --out_dir=out-shakespeare-char-fm            # one-step samples
# It writes more real words at 1-8 steps than the two stages (config/distill_stage*.py) given the
# same time (docs/results.md). The paper's recipe, except the schedule: lr 1e-3 with cosine decay
# and a short EMA for 2000 iterations (the paper: 1M steps, EMA 0.9999).
kind = 'flowmap'
out_dir = 'out-shakespeare-char-fm'
max_iters = 2000
lr_decay_iters = 2000
eval_interval = 300
learning_rate = 1e-3
warmup_iters = 50
ema_decay = 0.995         # ~200 steps averaged
boundary_every = 64       # the paper's: the whole jump (0, 1) in 1 of 64 jump samples
diagonal_share = 0.5      # the paper's code: half the sequences on the teacher's denoiser
loss_weighting = False
