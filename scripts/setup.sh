#!/usr/bin/env bash
# Sets up omniforge on a fresh Debian/Ubuntu machine with Python >= 3.10: system packages, then a
# virtual environment in .venv with the project and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng adds ~100 extra user voices; FFmpeg lets Hugging Face datasets (torchcodec) decode our
# speech shards' audio; chromium runs the serving page's browser test headless. None is needed to
# build, train, evaluate or serve, so a machine where we cannot install them only gets a warning.
missing=""
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
command -v ffmpeg >/dev/null 2>&1 || missing="$missing ffmpeg"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
  else
    echo "warning: not installed:$missing (espeak-ng: user voices; ffmpeg: datasets audio decoding;" \
         "chromium: the page's browser test)" >&2
  fi
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# constraints.txt pins torch to the CPU build; without it pip pulls several GB of CUDA wheels.
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
# CosyVoice 2's own code (FunAudioLLM's, packaged). Its declared requirements (onnxruntime-gpu, openai-whisper,
# modelscope, torchaudio) serve its frontend and training, which omniforge does not use; what its flow and
# HiFT import is in pyproject.toml.
.venv/bin/python -m pip install -q --no-deps "cosyvoice-minicpmo==0.1.0"
echo "omniforge is set up in .venv ($(.venv/bin/omniforge --version 2>/dev/null || echo ok))"
