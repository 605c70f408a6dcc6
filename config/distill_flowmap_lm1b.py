# Flow-map distillation in one stage (method.md 8: one network, a KL semigroup target) of the LM1B FLM of
# config/train_lm1b.py, e.g. on 8 GPUs:
# $ torchrun --standalone --nproc_per_node=8 train.py config/distill_flowmap_lm1b.py --teacher=out-lm1b/ckpt.pt
# or from the paper's released FLM: --teacher=FLM-B-LM1B (on data/lm1b/prepare.py's data)
# The student is the teacher's network with a second time embedding: the model options are the teacher's.
# The settings are the paper's code's (github david3684/flm) for its LM1B distillation,
# scripts/train_lm1b_flm_distill.sh (data=lm1b-wrap, model.length=128, loader.global_batch_size=512,
# loader.batch_size=128, optim.lr=3e-4, trainer.max_steps=1000000, the boundary jump once in 64
# (+algo.boundary_prob=64), the learnable loss weighting on, targets from the online student
# (algo.bootstrap_ema=False), bf16, trainer.val_check_interval=10000), with configs/config.yaml's defaults
# (AdamW betas 0.9, 0.999, no weight decay, gradient clip 1.0, EMA 0.9999) and
# configs/lr_scheduler/constant_warmup.yaml (2500 warmup steps, then constant). That script trains stage 1
# (config/distill_stage1_lm1b.py); the one-network KL target is not in that code: the diagonal share 1/2 is
# method.md 8's.
include('distill_stage1_lm1b.py')  # its script's settings, and the paper's recipe
kind = 'flowmap'
out_dir = 'out-lm1b-fm'
diagonal_share = 0.5
