#!/usr/bin/env bash
# benchmarks/gpu.py's rows on a lent GPU machine, as one prepared run. That machine has torch and
# nothing can be fetched there, so the packages it lacks travel as wheels made here first.
#
#   bash benchmarks/gpu_run.sh wheels   # here (package registries reachable): .gpu-wheels/, ~31 MB
#   bash benchmarks/gpu_run.sh run      # there (the device tool's run, carry [".gpu-wheels"]): the
#                                       # decoder probe, then every row, into $OUT (else benchmarks/results)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
# what gpu.py needs beyond the machine's torch, at the versions of this checkout's .venv
NEEDED=(transformers huggingface_hub kernels peft httpx2 httpcore2 truststore hf-xet click tomlkit regex
        cosyvoice-minicpmo HyperPyYAML ruamel.yaml ruamel.yaml.clib omegaconf antlr4-python3-runtime diffusers
        conformer importlib_metadata)
PYTHON_TAG=312  # the GPU image's Python (cp312)

case "${1:-}" in
  wheels)
    specs=$(.venv/bin/python -c 'import sys; from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))' "${NEEDED[@]}")
    rm -rf "$WHEELS"
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_TAG" --implementation cp \
      --abi "cp$PYTHON_TAG" --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux_2_28_x86_64 -d "$WHEELS" $specs
    du -sh "$WHEELS"
    ;;
  run)
    out="${OUT:-benchmarks/results}"
    python3 -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    # exits 1 if the decoder's replayed estimator does not give the eager one's audio
    python3 benchmarks/gpu.py --decoder-probe
    # every row: latency with CosyVoice 2's decoder graph-replayed and both LMs' steps compiled, batching,
    # re-prefill, and the s2t training rows at batch 16 with the chunked loss (train.loss_chunk_tokens)
    python3 benchmarks/gpu.py --decoder-graph --compile llm tts --train-batch 16 --out "$out"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_run.sh wheels|run" >&2
    exit 2
    ;;
esac
