#!/usr/bin/env bash
# Installs the build and test dependencies from Debian's packages. With --if-missing, does nothing when all are there.
set -euo pipefail
packages=(cmake ninja-build g++ libgtest-dev libgmock-dev clang-format python3 python3-pip)
if [[ "${1:-}" == "--if-missing" ]]; then
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && exit 0
  packages=("${missing[@]}")
fi
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
