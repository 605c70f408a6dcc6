# Not in the paper: the tiny Shakespeare FLM with self-conditioning (flm.py 3, method.md 9). A step
# costs 1.15x the default's (its estimate on half the rows), so it gets fewer iterations and the
# default run's wall-clock on 2 CPU cores (docs/results.md 9):
# python train.py config/train_shakespeare_char_selfcond.py
# python sample.py --out_dir=out-shakespeare-char-sc                   # sample.py reads the option
# python train.py config/distill_shakespeare_char.py --teacher=out-shakespeare-char-sc/ckpt.pt \
#     --out_dir=out-shakespeare-char-sc-fm                             # its flow map (self-conditioned)
self_cond = True
out_dir = 'out-shakespeare-char-sc'
max_iters = 3100
lr_decay_iters = 3100
