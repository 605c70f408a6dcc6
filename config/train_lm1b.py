# The paper's LM1B FLM (method.md 3), as the paper's code trains it (github david3684/flm), e.g. on 8 GPUs:
# $ python data/lm1b/prepare.py
# $ torchrun --standalone --nproc_per_node=8 train.py config/train_lm1b.py
# or continue the released FLM: --init_from=FLM-B-LM1B. Each value's source in that code:
#   scripts/train_lm1b_flm.sh: data=lm1b-wrap (the data: data/lm1b/prepare.py frames it as that
#     code does: K = 30522, blocks [CLS] + 126 + [CLS], LM1B's test split for validation), model=small,
#     model.length=128, algo=flm (algo.double_temb=False), loader.global_batch_size=512, loader.batch_size=32,
#     optim.lr=3e-4, trainer.max_steps=1500000 (its README says 1M steps), trainer.precision=bf16,
#     trainer.val_check_interval=5000
#   configs/model/small.yaml: n_blocks 12, hidden_size 768, n_heads 12, cond_dim 128, dropout 0.1
#   models/dit.py, the network: LayerNorms with a learnable scale, attention logits soft-capped at 50, the time
#     embedding of the raw t, dropout in the blocks only (vocab_embed(x) goes straight into them)
#   configs/config.yaml: optim beta1 0.9, beta2 0.999, weight_decay 0, trainer.gradient_clip_val 1.0,
#     training.ema 0.9999; configs/lr_scheduler/constant_warmup.yaml: 2500 warmup steps, then constant
include('paper_recipe.py')
include('paper_network.py')
out_dir = 'out-lm1b'
dataset = 'lm1b'
block_size = 128
batch_size = 32
gradient_accumulation_steps = 16  # 32 x 16 = 512 sequences per step, over all processes
max_iters = 1_500_000
eval_interval = 5000
eval_iters = 8
