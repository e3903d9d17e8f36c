#!/usr/bin/env bash
# Issue 14's checks on one CUDA GPU in one go (every step timed out; at most about 9 minutes):
# the card and its torch, `pytest -m gpu`, `massl bench` on CUDA, and three short paper-scale
# MASSL(alter) runs from one seed (fp32, fp32 again = the GPU's run-to-run noise, bf16), whose train logs compare the two
# precisions' loss curves and validation Dice. Every step has a timeout; a failed step does not
# stop the later ones. Results and logs go to $OUT/gpu_check.tar.gz (rewritten after every step,
# so a cut-off script still returns what it did), its step list (step, exit code, seconds) also
# to $OUT/steps.tsv.
#
#   OUT=/some/folder bash scripts/gpu_check.sh        # from the repository root
#
# Python packages the machine lacks can come as wheels in build/wheels/ (ignored by git; e.g.
# `pip download --no-deps nibabel nilearn -d build/wheels`): they are installed into a folder of
# their own, never over the machine's torch. torch is installed only where it is missing.
# Knobs: ITERATIONS (300), VALIDATE_EVERY (50), METHOD (massl_alter), PYTHON (python3).
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}
PY=${PYTHON:-python3}
ITERATIONS=${ITERATIONS:-300}
VALIDATE_EVERY=${VALIDATE_EVERY:-50}
METHOD=${METHOD:-massl_alter}
WORK=$(mktemp -d /tmp/massl-gpu-check.XXXX)  # data and run folders: too big to come back
R=$WORK/gpu_check  # what comes back, packed
mkdir -p "$OUT" "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PY WORK
export MASSL="$PY -m massl.cli"
printf 'step\trc\tseconds\n' > "$R/steps.tsv"

pack() {  # few files may come back from $OUT: one archive (steps may pack at the same time)
  local tmp=$OUT/.pack.$BASHPID
  tar -czf "$tmp" -C "$WORK" gpu_check 2> /dev/null  # exit 1 = a file grew while read: still good
  [ -s "$tmp" ] && mv "$tmp" "$OUT/gpu_check.tar.gz"
  cp "$R/steps.tsv" "$OUT/steps.tsv"
}

step() {  # step NAME TIMEOUT_S COMMAND...: output to NAME.log, a row in steps.tsv
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (at most ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" > "$R/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$R/steps.tsv"
  tail -n 4 "$R/$name.log"
  pack
  return $rc
}

# 1. The card, its load during the whole script, and the Python environment.
nvidia-smi 2>&1 | tee "$R/nvidia-smi.txt"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$R/gpu_load.csv" 2>&1 &
MONITOR=$!
trap 'kill $MONITOR 2>/dev/null' EXIT
if ! $PY -c "import torch" 2>/dev/null; then
  step install_torch 300 $PY -m pip install "$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')"
fi
if compgen -G "build/wheels/*.whl" > /dev/null; then
  step install_wheels 120 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" build/wheels/*.whl && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
{ $PY -m pip list 2>/dev/null | grep -i torch
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available',
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
  $PY -c "import massl.training.run, massl.bench; print('massl imports')"; } 2>&1 | tee "$R/environment.txt"

# 2. Full-size synthetic data for the precision runs, on the CPU, while the tests use the GPU:
# config/paper_check.yaml's BraTS grid (155x200x200 after preprocessing) with 8 cases, so that
# 4L4U leaves 2 test and 2 validation scans.
$PY - "$WORK" "$ITERATIONS" "$VALIDATE_EVERY" <<'EOF'
import json, sys, yaml
work, iterations, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = yaml.safe_load(open("config/paper_check.yaml"))
brats = config["datasets"]["brats18"]
brats["synthetic"]["n_cases"] = 8
brats["settings"] = {"4L4U": [4, 4]}
config.update(datasets={"brats18": brats}, results_dir=f"{work}/results", scale="gpu_amp_check")
for amp in ("off", "bf16"):
    config["training"] = {"max_iterations": iterations, "validate_every_iterations": every,
                          "checkpoint_every_iterations": every, "amp": amp}
    json.dump(config, open(f"{work}/config_{amp}.json", "w"), indent=1)
EOF
prepare() {
  local results=$WORK/results shape
  shape=$($PY -c "import json; print(*json.load(open('$WORK/config_off.json'))['datasets']['brats18']['synthetic']['shape'])")
  $MASSL synth --dataset brats18 --out "$WORK/raw" --n-cases 8 --seed 0 --shape $shape &&
  $MASSL preprocess brats18 "$WORK/raw/MICCAI_BraTS_2018_Data_Training" --out "$results/preprocessed/brats18" \
    --config "$WORK/config_off.json" --dataset brats18 &&
  $MASSL split --cases "$results/preprocessed/brats18/cases.tsv" --dataset brats18 --rep 1 \
    --out "$results/splits/brats18/rep1.json" --config "$WORK/config_off.json"
}
export -f prepare
step prepare_data 300 bash -c prepare &
PREPARE=$!

# 3. The GPU tests (the full-volume inference test prints its peak memory).
step pytest_gpu 150 $PY -m pytest -m gpu -q -rs -p no:cacheprovider --continue-on-collection-errors \
  --junitxml "$R/pytest_gpu.xml"
grep "full-volume inference" "$R/pytest_gpu.log"

wait $PREPARE  # before the bench, whose timings should not share the CPU with the synthesis

# 4. Seconds per iteration of every strategy at paper scale, full-volume inference, GPU-hours of the grid.
step bench 180 $MASSL bench --device cuda --out "$R/bench.json"

# 5. The precision pair (and an fp32 repeat) from one seed, side by side on the GPU. Their
# `seconds` columns share the card; speed is the bench's business.
TRAININGS=()
for run in off off_repeat bf16; do
  step "train_$run" 180 $MASSL train --config "$WORK/config_${run%_repeat}.json" --dataset brats18 \
    --setting 4L4U --method "$METHOD" --rep 1 --out "$WORK/runs/$run" --device cuda --threads 4 &
  TRAININGS+=($!)
done
wait "${TRAININGS[@]}"  # not a bare wait: the load monitor never ends
for run in off off_repeat bf16; do  # a run cut off by its timeout: the log rows of its last checkpoint
  folder=$WORK/runs/$run
  for file in train_log.tsv summary.json per_case.tsv per_case_final.tsv; do
    [ -f "$folder/$file" ] && cp "$folder/$file" "$R/${run}_$file"
  done
  [ -f "$folder/train_log.tsv" ] || [ ! -f "$folder/checkpoints/last.pt" ] || $PY -c "
from massl.training.checkpoint import load_checkpoint; from massl.training.run import write_train_log
write_train_log('$R/${run}_train_log_partial.tsv', load_checkpoint('$folder/checkpoints/last.pt')['rows'])"
done
pack
echo "done: $(ls "$R" | wc -l) files in $OUT/gpu_check.tar.gz"
