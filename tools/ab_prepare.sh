#!/usr/bin/env bash
# The base side of a GPU A/B of two builds (benchmarks/gpu_session.sh's `ab` stage): REF's csrc/
# and CMakeLists.txt written to DEST (default ab_base/, ignored by git: carry it with the call,
# e.g. carry [".devtools", "ab_base"]); the other side is the working tree.
# Usage: bash tools/ab_prepare.sh REF [DEST]
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:?usage: tools/ab_prepare.sh REF [DEST] (REF: a commit, branch or tag)}
dest=${2:-ab_base}
commit=$(git rev-parse --verify --quiet "$ref^{commit}") || { echo "ab_prepare: REF: not a commit: $ref" >&2; exit 2; }
rm -rf "$dest" && mkdir -p "$dest"
git archive "$commit" csrc CMakeLists.txt | tar -x -C "$dest"
echo "$commit" > "$dest/REF"
echo "ab_prepare: $dest holds $commit's csrc/ and CMakeLists.txt"
