# Flow-map distillation in one stage (method.md 5: one network, a KL semigroup target), the paper's main
# recipe, of the OpenWebText FLM of config/train_owt.py, e.g. on 8 GPUs:
# $ torchrun --standalone --nproc_per_node=8 train.py config/distill_flowmap_owt.py --teacher=out-owt/ckpt.pt
# or from the paper's released FLM: --teacher=FLM-B-OWT (on data/openwebtext/prepare.py's data)
# The student is the teacher's network (12 x 768, dropout 0.1) with a second time embedding: the model
# options are the teacher's, and block_size must be its L. The settings are the paper's code's
# (github david3684/flm): its distillation script scripts/train_owt_flm_distill.sh (global batch 128,
# lr 3e-4, 1M steps, the boundary jump once in 64, the learnable loss weighting on, targets from the online
# student: algo.bootstrap_ema=False, bf16, evaluation every 10k steps) and the defaults it runs with,
# configs/config.yaml (AdamW betas 0.9, 0.999, no weight decay, gradient clip 1.0, EMA 0.9999) and
# configs/lr_scheduler/constant_warmup.yaml (2500 warmup steps, then constant). That code trains stage 1
# (config/distill_stage1_owt.py); its one-network KL target is not in it: the diagonal share 1/2 is method.md
# 5's, and the loss weighting, which method.md 5 calls optional, follows the script.
include('paper_recipe.py')
kind = 'flowmap'
out_dir = 'out-owt-fm'
dataset = 'openwebtext'
block_size = 1024
batch_size = 16
gradient_accumulation_steps = 8   # 16 x 8 = 128 sequences per step, over all processes
max_iters = 1_000_000
boundary_every = 64
diagonal_share = 0.5
loss_weighting = True
eval_interval = 10000
eval_samples = 16         # the fixed-noise samples of each evaluation (the script's eval batch per GPU)
