#!/usr/bin/env bash
# Installs the build and test dependencies from Debian's packages. With --if-missing, does nothing when all are there.
set -euo pipefail
# Debian packages for the C++ build and tests, then the Python package's build/test requirements with pip.
cd "$(dirname "$0")/.."
packages=(cmake ninja-build g++ libgtest-dev libgmock-dev clang-format python3 python3-pip)
if [[ "${1:-}" == "--if-missing" ]]; then
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  # A python3 other than Debian's (pyenv, a venv) counts when it has pip.
  if [[ " ${missing[*]} " == *" python3-pip "* ]] && python3 -m pip --version >/dev/null 2>&1; then
    missing=("${missing[@]/python3-pip/}")
    missing=("${missing[@]/python3/}")
    read -r -a missing <<<"${missing[*]}"
  fi
  packages=("${missing[@]}")
fi
if [[ ${#packages[@]} -gt 0 ]]; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi
if [[ "${1:-}" != "--if-missing" ]] || ! python3 -c "import nanobind, scikit_build_core, numpy, pytest" 2>/dev/null; then
  python3 -m pip install -q -r python/requirements-dev.txt 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
