#!/usr/bin/env bash
# Installs the build and test dependencies: Debian's packages (apt), then the Python package's build and test
# requirements with pip into the project's virtual environment .venv (created here if missing; Debian's
# Python refuses pip installs into itself, and the project keeps out of the system Python anyway).
#   scripts/install-deps.sh               install everything
#   scripts/install-deps.sh --if-missing  only what is not there yet (what run.sh and test.sh call)
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(cmake ninja-build g++ libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev clang-format
          python3 python3-dev python3-venv)
if [[ "${1:-}" == "--if-missing" ]]; then
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  # A python3 other than Debian's (pyenv) counts when it can make a virtual environment and has its headers.
  if [[ " ${missing[*]} " == *" python3"* ]] && python3 -m venv --help >/dev/null 2>&1 &&
    python3 -c "import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))"; then
    kept=()
    for p in "${missing[@]}"; do [[ "$p" == python3* ]] || kept+=("$p"); done
    missing=("${kept[@]+"${kept[@]}"}")
  fi
  packages=("${missing[@]+"${missing[@]}"}")
fi
if [[ ${#packages[@]} -gt 0 ]]; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

# The virtual environment: made once by the first python3 on PATH; pip installs go there only.
if [[ ! -x .venv/bin/python ]]; then
  rm -rf .venv
  python3 -m venv .venv
fi
if [[ "${1:-}" != "--if-missing" ]] ||
  ! .venv/bin/python -c "import nanobind, scikit_build_core, numpy, pytest, ml_dtypes" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r python/requirements-dev.txt
fi
