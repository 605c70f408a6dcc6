# tools/sweep.py on GPT-2 BPE Shakespeare (README): every method with the same network, data and token budget
# (config/train_shakespeare_bpe.py; its distillation config/distill_shakespeare_bpe.py), judged by an AR
# of another seed, the FLM deterministic (eta 0) and with its default fresh noise (eta 0.6):
# $ python -m tools.sweep config/sweep_shakespeare_bpe.py       # 65 minutes on 2 cores, most of it the FLM at 128-256 steps
judge = 'out-shakespeare-bpe-judge/ckpt.pt'
out_dir = 'sweep-shakespeare-bpe'
flm_ckpt = 'out-shakespeare-bpe/ckpt.pt'
fmlm_ckpt = 'out-shakespeare-bpe-fm/ckpt.pt'
mdlm_ckpt = 'out-shakespeare-bpe-mdlm/ckpt.pt'
ar_ckpt = 'out-shakespeare-bpe-ar/ckpt.pt'
flm_steps = '1,2,4,8,16,32,64,128,256'
fmlm_steps = '1,2,4,8'
mdlm_steps = '8,16,32,64,128,256'
flm_eta = '0,0.6'
num_samples = 32
batch_size = 32
latency = True
