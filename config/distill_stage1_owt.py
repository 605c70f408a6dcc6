# Stage 1 of flow-map distillation (method.md 8) of the OpenWebText FLM of config/train_owt.py, e.g. on
# 8 GPUs (then stage 2, config/distill_stage2_owt.py):
# $ torchrun --standalone --nproc_per_node=8 train.py config/distill_stage1_owt.py --teacher=out-owt/ckpt.pt
# or from the paper's released FLM: --teacher=FLM-B-OWT (on data/openwebtext/prepare.py's data)
# The paper's code's settings (github david3684/flm): scripts/train_owt_flm_distill.sh, its stage 1
# (algo flm_semigroup_distill: global batch 128, lr 3e-4, 1M steps, the boundary jump once in 64, the
# learnable loss weighting on, bf16, evaluation every 10k steps), with configs/config.yaml's defaults (AdamW
# betas 0.9, 0.999, no weight decay, gradient clip 1.0, EMA 0.9999) and configs/lr_scheduler/
# constant_warmup.yaml's schedule (2500 warmup steps, then constant). Model options: the teacher's.
include('paper_recipe.py')
kind = 'stage1'
out_dir = 'out-owt-fm1'
dataset = 'openwebtext'
block_size = 1024
batch_size = 16
gradient_accumulation_steps = 8   # 16 x 8 = 128 sequences per step, over all processes
max_iters = 1_000_000
boundary_every = 64
loss_weighting = True
eval_interval = 10000
eval_samples = 16
