# Stage 2 of flow-map distillation (method.md 8): one network, one pass per jump, ~6 minutes
# on 2 CPU cores. The stage-1 checkpoint carries the FLM teacher:
# python train.py config/distill_stage2_shakespeare_char.py --stage1=out-shakespeare-char-fm1/ckpt.pt
# As stage 1's preset, these are this project's settings for 2 cores, not the paper's.
kind = 'stage2'
out_dir = 'out-shakespeare-char-fm2'
max_iters = 900
lr_decay_iters = 900
eval_interval = 300
learning_rate = 1e-3
warmup_iters = 50
ema_decay = 0.995
boundary_every = 4        # the paper: 1 in 128
loss_weighting = False
