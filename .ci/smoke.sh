#!/usr/bin/env bash
# Smoke run of the whole pipeline and its FID gate, on a small real subset (a few minutes on 2 CPU cores):
#   1. dvc repro (profiles/smoke.yaml) ends with a champion            (promote exits 0)
#   2. a second dvc repro is a no-op
#   3. a variant made worse on purpose (dvc exp run -S train.epochs=0) completes as a saved experiment,
#      the gate refuses it (promote --strict exits 1), the champion stays
#   4. sample and lineage work against the champion, pickle-free
# Runs in a throwaway clone with its own MLflow store and DVC cache; uses the venv of this checkout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$ROOT/.venv/bin:$PATH" GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
say() { echo "smoke: $*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }

git clone -q "$ROOT" "$WORK/repo"
cd "$WORK/repo"
python - "$WORK/idx" <<'PY'
import gzip, sys
from pathlib import Path
src, dst = Path("/usr/share/datasets/fashion-mnist"), Path(sys.argv[1])
dst.mkdir(parents=True)
for split, n in (("train", 5000), ("t10k", 400)):
    for kind, item in (("images-idx3", 784), ("labels-idx1", 1)):
        with gzip.open(src / f"{split}-{kind}-ubyte.gz") as f:
            raw = f.read()
        head = 16 if item == 784 else 8
        header = raw[:4] + n.to_bytes(4, "big") + raw[8:head]
        with gzip.open(dst / f"{split}-{kind}-ubyte.gz", "wb") as f:
            f.write(header + raw[head:head + n * item])
PY
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
ganops profile profiles/smoke.yaml -S "data.path=$WORK/idx" >/dev/null
git -c user.name=ci -c user.email=ci@localhost -c commit.gpgsign=false commit -qam "smoke profile"

say "1/4 dvc repro from scratch"
start=$SECONDS
rc=0; dvc repro >"$WORK/repro1.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || { tail -30 "$WORK/repro1.log"; fail "first dvc repro exited $rc"; }
grep -E "^(judge|floor|evaluate|promote):" "$WORK/repro1.log" | sed 's/^/  /'
python -c "import json,sys; d=json.load(open('metrics/promote.json')); sys.exit(d['decision']!='promoted')" \
  || fail "first candidate was not promoted: $(cat metrics/promote_detail.json)"
python - <<'PY' || fail "a stage of the first dvc repro has no finished MLflow run"
import sys, yaml
from mlflow.tracking import MlflowClient
stages = list(yaml.safe_load(open("dvc.yaml"))["stages"])
exp = yaml.safe_load(open("params.yaml"))["tracking"]["experiment"]
c = MlflowClient()
runs = c.search_runs([c.get_experiment_by_name(exp).experiment_id], "attributes.status = 'FINISHED'")
missing = sorted(set(stages) - {r.data.tags.get("ganops.stage") for r in runs})
print(f"  MLflow runs of {len(stages)} stages; missing: {missing or 'none'}")
sys.exit(bool(missing))
PY
say "  ok: champion set ($((SECONDS - start)) s)"

say "2/4 second dvc repro is a no-op"
dvc repro >"$WORK/repro2.log" 2>&1 || fail "second dvc repro failed"
grep -q "Running stage" "$WORK/repro2.log" && { cat "$WORK/repro2.log"; fail "second dvc repro ran stages"; }
git add -A && git -c user.name=ci -c user.email=ci@localhost -c commit.gpgsign=false commit -qm "champion run"
say "  ok (committed: the baseline of the experiment below)"

say "3/4 a worse variant (dvc exp run -S train.epochs=0) is a saved experiment the gate refuses"
rc=0; dvc exp run -n worse -S train.epochs=0 >"$WORK/exp.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || { tail -30 "$WORK/exp.log"; fail "dvc exp run of the worse variant exited $rc"; }
read -r decision champ < <(python -c "import json; d=json.load(open('metrics/promote_detail.json')); print(d['decision'], d['champion_after'])")
[ "$decision" = refused ] || fail "the worse variant was $decision: $(cat metrics/promote_detail.json)"
[ "$champ" = 1 ] || fail "champion moved to v$champ"
dvc exp list --name-only | grep -qx worse || fail "experiment 'worse' is not in dvc exp list"
# Plain --only-changed: the metrics come first, so the FID is visible; DVC then adds a column per changed
# dependency hash (models/generator.pt, ...) and, for a data path outside the repo, one more for the
# workspace row. The README's command drops those and fits 160 columns.
plain=$(COLUMNS=160 dvc exp show --only-changed --no-pager)
grep -q "fid200" <<<"$plain" || { echo "$plain"; fail "dvc exp show --only-changed shows no fid200 column"; }
table=$(COLUMNS=160 dvc exp show --only-changed --hide-workspace --drop 'Created|data/|models/' --no-pager)
echo "$table" | sed 's/^/  /'
for col in fid200 kid200 decision train.epochs; do
  grep -q "$col" <<<"$table" || fail "the README's dvc exp show has no $col column"
done
if grep -q "…" <<<"$table" || [ "$(wc -L <<<"$table")" -gt 160 ]; then
  fail "the README's dvc exp show of two variants does not fit 160 columns"
fi
set +e
# CI=true: a gate against a local store is refused unless meant (here it is: the smoke run's own store)
ganops promote --dry-run --strict --allow-local-store; dry=$?
ganops promote --strict --allow-local-store; gate=$?
set -e
[ "$dry" = 1 ] || fail "promote --dry-run --strict exited $dry, expected 1"
[ "$gate" = 1 ] || fail "promote --strict exited $gate, expected 1 (refused)"
say "  ok: saved as experiment 'worse', refused (--strict exits 1), champion still v1"

say "4/4 sample and lineage from the champion"
ganops sample --model models:/ganops-generator@champion -n 16 --out "$WORK/grid.png"
ganops lineage models:/ganops-generator@champion
say "passed in $SECONDS s"
