# The paper's DiT (github david3684/flm: configs/model/small.yaml: 12 blocks of width 768, 12 heads,
# cond_dim 128, dropout 0.1; models/dit.py: LayerNorms with a learnable scale, attention logits
# soft-capped at 50, the time embedding of the raw t, dropout in the blocks only), which the OWT and
# LM1B FLM presets include. A flow map's network is its teacher's.
n_layer = 12
n_head = 12
n_embd = 768
n_cond = 128
dropout = 0.1
ln_scale = True
attn_softcap = 50.0
time_scale = 1.0
embed_dropout = False
