#!/usr/bin/env bash
# The GPU job's steps (.github/workflows/gpu.yml runs exactly this; so can anyone, anywhere, after `bash setup.sh`):
#   bash .ci/train-and-gate.sh PROFILE [-S key=value ...]
#
# 1. The team's stores, or nothing: the DVC remote is the repo's default remote (.dvc/config; DVC_REMOTE_URL, a
#    secret, may set it in the untracked .dvc/config.local instead), the experiments' git remote is $GIT_REMOTE
#    (origin), and MLflow is MLFLOW_TRACKING_URI. A missing or failing remote fails the job; under CI=true a
#    local MLflow store makes the gate refuse (promote --strict, exit 2).
# 2. The profile runs as a DVC experiment, so the tracked tree stays the commit's and the run is recorded:
#    named <profile>-<commit>-<hash of profile and -S list>. If the git remote already has that experiment (an
#    earlier job on this commit), it is pulled and applied and nothing is trained; otherwise `dvc exp run` and
#    `dvc exp push` (its git ref to the git remote, its outputs to the DVC remote). A teammate gets the same
#    files with `dvc exp pull origin <name> && dvc exp apply <name>`.
# 3. The FID gate: `ganops promote --strict` exits 1 when it refuses the generator (the job fails).
# Exit codes: 0 promoted or unchanged, 1 refused by the gate, 2 bad use or a store/remote that failed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dvc ] && export PATH="$PWD/.venv/bin:$PATH"
export GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false
say() { echo "job: $*"; }
die() { echo "job: error: $*" >&2; exit 2; }

[ $# -ge 1 ] && [ -f "$1" ] || die "usage: bash .ci/train-and-gate.sh PROFILE [-S key=value ...] (profile: ${1:-none given})"
profile=$1; shift
sets=("$@")
for ((i = 0; i < ${#sets[@]}; i += 2)); do
  [ "${sets[i]}" = -S ] && [ -n "${sets[i + 1]:-}" ] || die "after the profile only -S key=value pairs, got: ${sets[*]}"
done
GIT_REMOTE=${GIT_REMOTE:-origin}

# ---- 1. stores and remotes ---------------------------------------------------------------------------------
git diff --quiet HEAD -- . ':(exclude)dvc.lock' || die "the checkout has uncommitted changes; the job runs a commit"
git remote get-url "$GIT_REMOTE" >/dev/null 2>&1 || die "git remote '$GIT_REMOTE' is not configured (experiments are pushed there)"
if [ -n "${DVC_REMOTE_URL:-}" ]; then
  dvc remote add --local --force --default ci "$DVC_REMOTE_URL" >/dev/null
fi
remote=$(dvc remote default 2>/dev/null) || die "no default DVC remote: add one to .dvc/config (dvc remote add -d store s3://...) or set DVC_REMOTE_URL"
url=$(dvc remote list | awk -v r="$remote" '$1 == r { print $2 }')
scheme=${url%%://*}
case "$scheme" in  # DVC's cloud remotes are plugins: install the one this remote needs (a no-op when present)
  s3|gs|azure|ssh|hdfs|webdav|oss)
    python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('dvc_$scheme') is None)" \
      || pip install -q "dvc-$scheme" ;;
esac
say "DVC remote '$remote' ($url), git remote '$GIT_REMOTE', MLflow ${MLFLOW_TRACKING_URI:-<unset: local store>}"
dvc pull --allow-missing || die "dvc pull from '$remote' failed"   # the commit's own outputs, if anyone pushed them

# ---- 2. the experiment: pulled if it exists, else run and pushed -------------------------------------------
commit=$(git rev-parse --short=8 HEAD)
digest=$( { cat "$profile"; printf '%s\n' "${sets[@]}"; } | sha256sum | cut -c1-8)
name="$(basename "$profile" .yaml)-$commit-$digest"
listed=$(dvc exp list "$GIT_REMOTE" --name-only) || die "dvc exp list $GIT_REMOTE failed"
if grep -qx "$name" <<<"$listed"; then
  say "experiment $name exists on $GIT_REMOTE: pulling it, nothing to train"
  dvc exp pull "$GIT_REMOTE" "$name" || die "dvc exp pull $GIT_REMOTE $name failed"
  dvc exp apply "$name" >/dev/null || die "dvc exp apply $name failed"
  dvc status --quiet || die "experiment $name does not match this checkout (dvc status is not clean)"
else
  say "running experiment $name ($profile ${sets[*]})"
  ganops profile "$profile" "${sets[@]}" >/dev/null || die "profile $profile was refused"
  dvc exp run -n "$name" || die "dvc exp run failed"
  dvc exp push "$GIT_REMOTE" "$name" || die "dvc exp push $GIT_REMOTE $name failed (git ref or outputs not shared)"
  say "pushed experiment $name: its git ref to $GIT_REMOTE, its outputs to DVC remote '$remote'"
fi

# ---- 3. the gate ---------------------------------------------------------------------------------------------
# its record goes beside the outputs, not over metrics/promote.json (the experiment's own decision)
gate=$(mktemp -d)
rc=0; ganops promote --strict --out "$gate/gate.json" || rc=$?
case $rc in
  0) say "gate passed ($(python -c "import json, sys; print(json.load(open(sys.argv[1]))['decision'])" "$gate/gate.json"))" ;;
  1) say "gate refused the generator"; exit 1 ;;
  *) exit 2 ;;
esac
