# Stage 1 of flow-map distillation (method.md 5) of the LM1B FLM of config/train_lm1b.py, e.g. on 8 GPUs
# (then stage 2, config/distill_stage2_lm1b.py):
# $ torchrun --standalone --nproc_per_node=8 train.py config/distill_stage1_lm1b.py --teacher=out-lm1b/ckpt.pt
# or from the paper's released FLM: --teacher=FLM-B-LM1B (on data/lm1b/prepare.py's data)
# The paper's code's settings (github david3684/flm): scripts/train_lm1b_flm_distill.sh (algo
# flm_semigroup_distill, data=lm1b-wrap, model.length=128, loader.global_batch_size=512,
# loader.batch_size=128, optim.lr=3e-4, trainer.max_steps=1000000, the boundary jump once in 64, the
# learnable loss weighting on, bf16, trainer.val_check_interval=10000), with configs/config.yaml's defaults
# (AdamW betas 0.9, 0.999, no weight decay, gradient clip 1.0, EMA 0.9999) and configs/lr_scheduler/
# constant_warmup.yaml's schedule (2500 warmup steps, then constant). Model options: the teacher's.
include('paper_recipe.py')
kind = 'stage1'
out_dir = 'out-lm1b-fm1'
dataset = 'lm1b'
block_size = 128
batch_size = 128
gradient_accumulation_steps = 4   # 128 x 4 = 512 sequences per step, over all processes
max_iters = 1_000_000
boundary_every = 64
loss_weighting = True
eval_interval = 10000
eval_samples = 16
