#!/usr/bin/env bash
# Copy what `import_runs` needs of a results folder into another folder: config.json, every
# run's summary.json, provenance.json, train_log.tsv and per-case TSVs, the probe TSVs and the
# per-job benchmarks (no models, checkpoints or examples.npz: about 1/300 of the size). Bring
# the copy to another machine and build the tables there with
#   snakemake all_tables all --configfile <the grid's config> --config import_runs=DEST
#
#   bash scripts/export_runs.sh RESULTS DEST
set -euo pipefail
results=${1:?usage: export_runs.sh RESULTS DEST}
dest=${2:?usage: export_runs.sh RESULTS DEST}
if [[ ! -f "$results/config.json" ]]; then
    echo "export_runs.sh: $results/config.json is missing: $results is not the results folder of a grid" >&2
    exit 2
fi
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
cd "$results"
folders=()
for folder in runs probe benchmarks; do [[ -d $folder ]] && folders+=("$folder"); done
find config.json "${folders[@]}" \( -path config.json -o -path 'runs/*' \( -name summary.json \
    -o -name provenance.json -o -name train_log.tsv -o -name 'per_case*.tsv' \) \
    -o -path 'probe/*.tsv' -o -path 'benchmarks/*/*.tsv' \) -type f -print0 \
    | xargs -0 cp --parents -t "$dest"
echo "export_runs.sh: $(find "$dest" -type f | wc -l) files in $dest"
