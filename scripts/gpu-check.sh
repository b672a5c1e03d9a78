#!/usr/bin/env bash
# The trainer's prepared GPU check (issue 10): a machine with one CUDA GPU, PyTorch and transformers,
# no network. Prints one line per check (PASS/FAIL) and exits non-zero if any failed; under 8 minutes.
#
#   scripts/gpu-check.sh          # on the GPU machine, from a checkout of this repository
#   scripts/gpu-check.sh --cpu    # the reduced CPU form (tests/integration/train/test_gpu_check.py)
#
# Packages the GPU image lacks travel as wheels in a folder named by M2RL_WHEELS (DeepSpeed is an
# sdist on PyPI: build its pure-Python wheel with `pip wheel --no-deps deepspeed==0.19.8`; with it
# hjson and pydantic (+ pydantic-core, annotated-types, typing-inspection)). They are installed
# with --no-index into a private folder, never over the image's own packages.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
if [[ -n "${M2RL_WHEELS:-}" ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/m2rl-site \
        "$M2RL_WHEELS"/*.whl
    export PYTHONPATH=/tmp/m2rl-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT/trainer-image${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec timeout 480 "$PY" -m m2rl_trainer.gpu_check "$@"
