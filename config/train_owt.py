# The paper's OpenWebText FLM (method.md 3), as the paper's code trains it (github david3684/flm), e.g. on 8 GPUs:
# $ python data/openwebtext/prepare.py
# $ torchrun --standalone --nproc_per_node=8 train.py config/train_owt.py
# or continue the released FLM: --init_from=FLM-B-OWT. Each value's source in that code:
#   scripts/train_owt_flm.sh: data=openwebtext-split (the data: data/openwebtext/prepare.py frames it as that
#     code does: K = 50258, blocks [BOS] + 1022 + [EOS], the last 100k documents for validation), model=small,
#     model.length=1024, algo=flm (algo.double_temb=False), loader.global_batch_size=512, loader.batch_size=32,
#     optim.lr=3e-4, trainer.max_steps=1500000 (its README says 1M steps), trainer.precision=bf16,
#     trainer.val_check_interval=5000
#   configs/model/small.yaml: n_blocks 12, hidden_size 768, n_heads 12, cond_dim 128, dropout 0.1
#   models/dit.py, the network: LayerNorms with a learnable scale, attention logits soft-capped at 50, the time
#     embedding of the raw t, dropout in the blocks only (vocab_embed(x) goes straight into them)
#   configs/config.yaml: optim beta1 0.9, beta2 0.999, weight_decay 0, trainer.gradient_clip_val 1.0,
#     training.ema 0.9999; configs/lr_scheduler/constant_warmup.yaml: 2500 warmup steps, then constant
include('paper_recipe.py')
include('paper_network.py')
out_dir = 'out-owt'
dataset = 'openwebtext'
block_size = 1024
batch_size = 32
gradient_accumulation_steps = 16  # 32 x 16 = 512 sequences per step, over all processes
max_iters = 1_500_000
eval_interval = 5000
eval_iters = 8
