# Stage 2 of flow-map distillation (method.md 5): one network, one pass per jump, from the stage-1
# checkpoint of config/distill_stage1_lm1b.py (which carries the FLM teacher), e.g. on 8 GPUs:
# $ torchrun --standalone --nproc_per_node=8 train.py config/distill_stage2_lm1b.py --stage1=out-lm1b-fm1/ckpt.pt
# The paper's code's settings (github david3684/flm): scripts/train_lm1b_flm_distill_second.sh (algo
# flm_distill_double, data=lm1b-wrap, model.length=128, loader.global_batch_size=512, loader.batch_size=128,
# optim.lr=3e-4, trainer.max_steps=1000000, the boundary jump once in 128, bf16,
# trainer.val_check_interval=5000; its loss, algo.py's FLM_distill_double, applies no loss weighting whatever
# the flag says), with configs/config.yaml's defaults (AdamW betas 0.9, 0.999, no weight decay, gradient
# clip 1.0, EMA 0.9999) and configs/lr_scheduler/constant_warmup.yaml's schedule (2500 warmup steps, then
# constant).
include('paper_recipe.py')
kind = 'stage2'
out_dir = 'out-lm1b-fm2'
dataset = 'lm1b'
block_size = 128
batch_size = 128
gradient_accumulation_steps = 4   # 128 x 4 = 512 sequences per step, over all processes
max_iters = 1_000_000
boundary_every = 128
loss_weighting = False
eval_interval = 5000
eval_samples = 16
