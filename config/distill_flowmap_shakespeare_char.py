# Flow-map distillation in one stage (method.md 8): one network h_psi on a KL semigroup target,
# from the default tiny Shakespeare FLM. Its checkpoint carries no teacher (its sampler needs none):
# python train.py config/distill_flowmap_shakespeare_char.py --teacher=out-shakespeare-char/ckpt.pt
# Not searched yet: the stage presets' schedule (learning rate, warmup, EMA) and the paper's recipe
# (boundary 1 in 64, diagonal share 1/2, no loss weighting). An iteration takes about 3/4 of a stage-1
# iteration (a short timing), so 3000 iterations take about as long as the two stage presets together.
kind = 'flowmap'
out_dir = 'out-shakespeare-char-fm'
max_iters = 3000
lr_decay_iters = 3000
eval_interval = 300
learning_rate = 1e-3
warmup_iters = 50
ema_decay = 0.995         # ~200 steps averaged (the paper: 0.9999, for 1M steps)
boundary_every = 64       # the paper's; the stage presets measured 4 better for one step
diagonal_share = 0.5      # the paper's code
loss_weighting = False
