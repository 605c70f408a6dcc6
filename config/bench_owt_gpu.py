# bench.py on one GPU at the OpenWebText size (method.md 3: 12 x 768, L = 1024, K = 50257) in bfloat16
# autocast, compiled: an FLM training step against AR's (tokens/s, MFU) and the one-step FMLM's latency
# for one 1024-token sample; a few minutes, most of it compiling:
# $ python bench.py config/bench_owt_gpu.py --out=bench-owt-gpu.json
L = '1024'
K = '50257'
n_layer = 12
n_head = 12
n_embd = 768
n_cond = 128
train = 'flm,ar'
samplers = 'fmlm1'
train_batch = 32          # per GPU in the paper's run (its scripts/train_owt_flm.sh: 32, 512 in all)
batch = 1                 # latency only: one shape, one compilation
reps = 5
mem_gb = 100.0            # of an H200's 141 GB (batch 32 fits in 40); on an 80 GB H100, --mem_gb=60
device = 'cuda'
dtype = 'bfloat16'
compile = True
peak_flops = 0.0          # 0: the GPU's dense bf16 peak by its name (tools/runs.py PEAK_FLOPS; H100 SXM, H200: 989e12)
