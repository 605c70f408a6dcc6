# The paper's code's optimizer and schedule (github david3684/flm), which every OWT and LM1B preset
# here includes: configs/config.yaml (AdamW betas 0.9, 0.999, no weight decay, gradient clip 1.0,
# EMA 0.9999), configs/lr_scheduler/constant_warmup.yaml (2500 warmup steps, then constant), lr 3e-4
# in every one of its scripts, bf16 (this project's default on GPUs), compiled.
learning_rate = 3e-4
beta1 = 0.9
beta2 = 0.999
weight_decay = 0.0
warmup_iters = 2500
decay_lr = False
grad_clip = 1.0
ema_decay = 0.9999
log_interval = 100
compile = True
