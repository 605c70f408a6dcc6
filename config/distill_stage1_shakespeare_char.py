# Stage 1 of flow-map distillation (method.md 8) of the default tiny Shakespeare FLM, ~18 minutes
# on 2 CPU cores:
# python train.py config/distill_stage1_shakespeare_char.py --teacher=out-shakespeare-char/ckpt.pt
# These are this project's settings for a 30-minute budget of both stages on 2 cores (the search:
# docs/results.md), not the paper's: more boundary jumps, no learnable loss weighting, a higher,
# decaying learning rate, a short EMA.
kind = 'stage1'
out_dir = 'out-shakespeare-char-fm1'
max_iters = 1800
lr_decay_iters = 1800
eval_interval = 300
learning_rate = 1e-3
warmup_iters = 50
ema_decay = 0.995         # ~200 steps averaged (the paper: 0.9999, for 1M steps)
boundary_every = 4        # the one-step jump s=0, t=1 in a quarter of the pairs (the paper: 1 in 64)
loss_weighting = False    # measured: the one-step samples wrote more real words without it
