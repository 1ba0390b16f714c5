#!/usr/bin/env bash
# Remakes the default model, models/shapes, as committed (models/README.md): the from-scratch
# recipe of examples/train_shapes.rs, then three continuations of 1 800 diffusion steps on
# twins (scenes in pairs that differ in one object's shape) with the word loss. About 1 h 50 on
# a 2-core AVX2 VM (the recipe ~74 min, each continuation ~12.5). Seeded: the same machine
# writes the same files. Usage: bash scripts/train-shapes.sh [MODELS_DIR]  (default: models)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-models}
work=$(mktemp -d)
cargo build --release --features ssr --example train_shapes
train=target/release/examples/train_shapes
"$train" "$work/recipe"
twins=(EASEL_DIFFUSION_STEPS=1800 EASEL_SHAPE_WEIGHT=12 EASEL_TWIN_WEIGHT=2 EASEL_WORD_WEIGHT=0.1 EASEL_WORD_SEED=5)
env "${twins[@]}" EASEL_SEED=5 EASEL_RESUME_FROM="$work/recipe" "$train" "$work/twins1"
env "${twins[@]}" EASEL_SEED=5 EASEL_RESUME_FROM="$work/twins1" "$train" "$work/twins2"
env "${twins[@]}" EASEL_SEED=6 EASEL_RESUME_FROM="$work/twins2" "$train" "$work/twins3"
mkdir -p "$out/shapes"
cp "$work/twins3/shapes/"* "$out/shapes/"
echo "wrote $out/shapes"
