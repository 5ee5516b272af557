#!/usr/bin/env bash
# One entry point for a fresh Debian/Ubuntu machine (root, or a user with sudo).
#   bash setup.sh repro   install everything, then run the pipeline (dvc repro)
#   bash setup.sh test    install everything, then run the test suite
#   bash setup.sh         install only
# Idempotent: a second run installs nothing new and goes straight to the job.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

need_apt=()
command -v git >/dev/null || need_apt+=(git)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
# the tests start a real `mlflow server` on PostgreSQL in a throwaway cluster (pg_virtualenv)
if [ "${1:-}" = test ] && ! command -v pg_virtualenv >/dev/null; then need_apt+=(postgresql postgresql-common); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    echo "setup: apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: no apt-get; install ${need_apt[*]} by hand (or set data.source/data.path)" >&2
  fi
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: Python >= 3.11 required, found $(python3 --version)" >&2; exit 2; }

[ -x .venv/bin/python ] || python3 -m venv .venv
# the stamp holds pyproject.toml's hash, not its time: a fresh checkout over a cached .venv (CI) installs nothing
stamp=.venv/.ganops-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH" GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1

case "${1:-}" in
  repro) shift; exec dvc repro "$@" ;;
  test)  shift; exec pytest -q "$@" ;;
  "")    echo "setup: done; activate with: source .venv/bin/activate" ;;
  *)     echo "usage: bash setup.sh [repro|test] [args...]" >&2; exit 2 ;;
esac
