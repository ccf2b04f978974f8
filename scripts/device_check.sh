#!/usr/bin/env bash
# The GPU checks of issues 14 and 18, prepared as one run for a lent device machine, whose
# time is short (15 minutes a task, starts included). Before the call, here:
#     python scripts/pack_crops.py configs/paper_mix.yaml device/data --crop 320 --budget-mib 20
#     pip download ... -d .whl pypng==0.20220715.0   (the device image lacks pypng; see its README)
# then the device tool's run, from the repository root, with carry [".whl", "device"]:
#     STEPS=1500 bash scripts/device_check.sh
# It writes under $OUT:
#   log.txt                    everything printed, the training run's log.csv (seconds per
#                              step) and model card at its end;
#   speed-DEVICE.json          benchmarks/speed.py's table (issue 18: tiny, small, paper);
#   MODEL.bf16-K.safetensors   its weights in bf16, in pieces under 16 MiB: $OUT returns at
#                              most 8 files of 16 MiB, 64 MiB in all (paper: 61 MiB, 4 pieces).
# Back here, join the pieces into one fp32 file that mirnet loads (piece 0 holds the card):
#     python scripts/weight_pieces.py join OUT/MODEL   (writes OUT/MODEL.safetensors)
# then score it on configs/paper_mix.yaml's validation before anything else.
# A dry run on a CPU runs every step small: DEVICE=cpu MODEL=nano STEPS=2 SPEED_MODELS=nano.
set -uo pipefail
OUT=${OUT:-/tmp/device-check}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-paper}
STEPS=${STEPS:-1500}
SPEED_MODELS=${SPEED_MODELS:-tiny small paper}
SECONDS_SPEED=${SECONDS_SPEED:-180}
SECONDS_TRAIN=${SECONDS_TRAIN:-300}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1
date
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || true
python3 -c "import torch, mirnet; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1

echo "== 1. speed table ($DEVICE; issue 18)"
# shellcheck disable=SC2086  # SPEED_MODELS is a list
timeout "$SECONDS_SPEED" python3 benchmarks/speed.py --device "$DEVICE" --models $SPEED_MODELS \
    --paths plain-fp32 eager-bf16 default compile-bf16 --repeats 5 --json "$OUT/speed-$DEVICE.json"
echo "speed: exit $?"

echo "== 2. $MODEL on the packed mix, $STEPS steps, under torchrun (NCCL on a GPU, AMP; issue 14)"
python3 - "$MODEL" "$STEPS" <<'EOF' || exit 1
import sys
import yaml
config = yaml.safe_load(open("device/data/config.yaml"))
config["model"] = {"name": sys.argv[1]}
config["train"]["max_steps"] = int(sys.argv[2])
config["train"]["checkpoint_every"] = 100
yaml.safe_dump(config, open("/tmp/device-train.yaml", "w"), sort_keys=False)
EOF
timeout "$SECONDS_TRAIN" torchrun --standalone --nproc_per_node 1 -m mirnet train \
    --config /tmp/device-train.yaml --out /tmp/device-run
echo "train: exit $?"

echo "== 3. the weights, in bf16 pieces under 16 MiB"
python3 - <<'EOF'
from mirnet.training import Trainer, load_config, parse_config

config = parse_config(load_config("/tmp/device-train.yaml").to_dict())
try:  # the last checkpoint, also when the time limit stopped training mid-epoch
    Trainer(config, None, "/tmp/device-run", resume=True, progress=False).export()
except Exception as err:  # noqa: BLE001 - report and keep what there is
    print("export:", err)
EOF
python3 scripts/weight_pieces.py split /tmp/device-run/model.safetensors "$OUT/$MODEL"
cat /tmp/device-run/log.csv /tmp/device-run/model.json 2>/dev/null
date
