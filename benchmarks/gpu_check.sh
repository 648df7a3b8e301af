#!/usr/bin/env bash
# The GPU check: one script, under 8 minutes on one H200, run whenever a CUDA machine is at hand
# (CI never runs it). From the repository root:
#
#   bash benchmarks/gpu_check.sh [RUN_DIR]          # default: /tmp/latentgram-gpu
#
# 1. `latentgram prepare` on CUDA: the default run (BL-AE, latents, tables, fallback γ-ARVMs).
# 2. The memorizer at γ = 7 (global on the 4×4 grid) on the whole run, wide enough for its
#    710k contexts, until its train KL is ≤ 1e-3 or MEMORIZER_SECONDS pass; then 1,000 neural
#    samples and the share that copy a training latent exactly.
# 3. The paper's Table 1 on Fashion-MNIST, 4×4×12 codes: the paper-t1 preset (a global decoder
#    head, 85 M parameters, built to memorize) for TABLE1_EPOCHS epochs and TABLE1_POLISH epochs
#    of decoder-only polish, where it memorizes; then the paper's own widths (paper-t4, 1024-wide
#    1×1 head) for 6 epochs; each one's train and test PSNR (the gap is the decoder memorizing)
#    and whether the collapse detector spoke.
# It prints the KL per epoch, the wall times, the copy rate and the PSNRs. Targets (issues):
# train KL ≤ 1e-3 within 10 minutes, ≥ 90 % exact copies; Table 1: train PSNR ≥ 30 dB in ≤ 5 min.
#
# A machine without DuckDB gets it from wheels in .whl/ (downloaded beforehand with
# `pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64
#  --platform manylinux_2_28_x86_64 --no-deps -d .whl duckdb==2.* pydantic pydantic-core
#  pydantic-settings python-dotenv annotated-types typing-inspection`, the versions of .venv: an
# image with PyTorch alone lacked all of these): they are installed into /tmp/site. A machine
# without Debian's dataset package reads Fashion-MNIST's four .gz files from the folder named by
# LATENTGRAM_FASHION_MNIST_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-/tmp/latentgram-gpu}
MEMORIZER_SECONDS=${MEMORIZER_SECONDS:-180}
TABLE1_EPOCHS=${TABLE1_EPOCHS:-20}
TABLE1_POLISH=${TABLE1_POLISH:-120}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import duckdb" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

step() { echo; echo "== $1 ($(date +%T))"; }

step "prepare the default run on CUDA"
start=$(date +%s)
python3 -m service.cli prepare --run "$RUN" --device cuda 2>&1 | grep -v "it/s\]\|step/s\]" | tail -40
echo "prepare: $(( $(date +%s) - start )) s"

step "memorizer at γ = 7 (budget ${MEMORIZER_SECONDS} s)"
start=$(date +%s)
python3 -m service.cli train-arvm --run "$RUN" --gamma 7 --use memorizer --device cuda \
    --hidden 1536 --blocks 3 --batch-size 8192 --lr 2e-3 --max-seconds "$MEMORIZER_SECONDS" \
    2>&1 | grep -v "it/s\]\|step/s\]" | tail -20
echo "memorizer: $(( $(date +%s) - start )) s"
python3 - "$RUN" <<'EOF'
import json, sys
from pathlib import Path
for line in Path(sys.argv[1], "reports", "arvm-g7-metrics.jsonl").read_text().splitlines():
    epoch = json.loads(line)
    kl = epoch.get("train_kl", epoch.get("train_kl_estimate"))
    print(f"epoch {epoch['epoch']:4d}  train KL {kl:.5f}  {epoch['elapsed_s']:7.1f} s"
          f"  {epoch['contexts_per_s']:,} contexts/s")
EOF

step "neural samples at γ = 7: exact copies of training latents"
python3 - "$RUN" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from neural_memorization import copy_rate
from service.run.paths import RunPaths
print(f"exact-copy rate: {copy_rate(RunPaths(Path(sys.argv[1])), 7, 1000, 0):.1%}")
EOF

table1() {  # table1 PRESET EPOCHS [train-ae flags…]: the preset with 4×4×12 codes, its PSNRs
    local run="$RUN-table1-$1" preset=$1 epochs=$2
    shift 2
    start=$(date +%s)
    python3 -m service.cli train-ae --run "$run" --preset "$preset" --latent-channels 12 \
        --epochs "$epochs" --batch-size 256 --device cuda "$@" 2>&1 | grep -v "step/s\]" | tail -30
    echo "table 1, $preset: $(( $(date +%s) - start )) s"
    python3 - "$run" <<'EOF'
import json, sys
from pathlib import Path
blae = json.loads(Path(sys.argv[1], "run.json").read_text())["blae"]
print(f"train PSNR {blae['train_metrics']['psnr_binary']:.2f} dB, "
      f"test PSNR {blae['test_metrics']['psnr_binary']:.2f} dB, collapse: {blae['collapse']}")
EOF
}

step "Table 1: paper-t1 (global decoder head), ${TABLE1_EPOCHS} epochs + ${TABLE1_POLISH} of polish"
# its 1 GB checkpoint would take about as long as an epoch here: every tenth epoch and the last
table1 paper-t1 "$TABLE1_EPOCHS" --decoder-polish "$TABLE1_POLISH" --checkpoint-every 10
step "Table 1 with the paper's widths: paper-t4 (1×1 head) with 4×4×12 codes, 6 epochs"
table1 paper-t4 6
