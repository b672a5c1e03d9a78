#!/usr/bin/env bash
# The project's main job on one CPU machine: the mix-vs-merge study in miniature.
#
#   1. installs what is missing (scripts/setup.sh; nothing when it is all there);
#   2. writes the four-domain toy curriculum and the tiny SFT model (python -m m2rl_trainer.quickstart);
#   3. runs examples/quickstart/ -- the same YAML the operator runs on a cluster -- with local
#      processes: four expert RLVRRuns, one mixed RLVRRun, five MergeJobs and one MT-OPD RLVRRun of
#      the experts, one EvalSuite (m2rl run);
#   4. writes the report: results table, reward curves, task-vector similarity, costs (m2rl report).
#
# Usage: bash scripts/quickstart.sh [WORKDIR]   (default runs/quickstart). Ctrl-C stops every process;
# running the same command again resumes where it stopped (finished resources are skipped).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PATH="$ROOT/.tools/bin:$ROOT/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WORK="${1:-runs/quickstart}"
started=$(date +%s)
python -m m2rl_trainer.quickstart prepare --data-root "$WORK/pvc"
m2rl run -f examples/quickstart --workdir "$WORK" --data-root "$WORK/pvc"
m2rl report "$WORK"
echo "[quickstart] done in $(( $(date +%s) - started )) s. Report: $WORK/report/report.md"
echo "[quickstart] statuses: m2rl get -w $WORK -o wide    logs: $WORK/<kind>/<name>/logs/"
