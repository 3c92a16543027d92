#!/usr/bin/env bash
# The real-kernel suite (`npm run test:kernel`): sets up QEMU + a Debian kernel (test/kernel/setup.sh),
# builds the project, boots one guest per topology and runs guest/suite.mjs inside it, then writes
# test/kernel/runs/latest/results.json {passed, failed, skipped, checks:[...]} and prints the summary.
# Exit status: 0 only when every check passed.
#   KT_TOPOLOGIES="acs noacs"   which topologies (default: all in topologies/ except minimal)
#   KT_CHECKS="groups assign"   run these checks instead of each topology's TOPO_CHECKS
#   KT_HOTPLUGS=20              hot-plug rounds of the guard check
#   KT_BUILD=auto|1|0           build when dist/ is older than a source (default) / always / never
set -uo pipefail
source "$(dirname "$0")/lib/env.sh"
T0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

RUN="$KT_RUNS/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RUN"
ln -sfn "$(basename "$RUN")" "$KT_RUNS/latest"

if ! "$KT_DIR/setup.sh"; then
  echo '{"passed":0,"failed":1,"skipped":0,"checks":[{"name":"setup","status":"failed","failures":["test/kernel/setup.sh failed"]}]}' > "$RUN/results.json"
  echo "kernel: setup failed"; exit 1
fi
echo "setup: $(ms "$T0") ms" > "$RUN/timings.txt"

cd "$KT_REPO" || exit 1
# Build unless dist/ is newer than every source file (CI has just built it for the unit suite).
stale() { [[ ! -f dist/cli/main.js ]] || [[ -n "$(find . -name '*.ts' -newer dist/cli/main.js -not -path './node_modules/*' -not -path './dist/*' -print -quit)" ]]; }
if [[ "${KT_BUILD:-auto}" == 1 ]] || { [[ "${KT_BUILD:-auto}" == auto ]] && stale; }; then
  T=$(date +%s%N)
  # tsc still emits when it reports type errors; the checks then say what does not work.
  npm run build --silent || echo "kernel: warning: \`npm run build\` reported errors; running with the dist/ it produced" >&2
  echo "build: $(ms "$T") ms" >> "$RUN/timings.txt"
fi

TOPOS="${KT_TOPOLOGIES:-}"
if [[ -z "$TOPOS" ]]; then
  for f in "$KT_DIR"/topologies/*.sh; do n="$(basename "$f" .sh)"; [[ "$n" == minimal ]] || TOPOS+=" $n"; done
fi
export KT_PASS_ENV="KT_CHECKS KT_HOTPLUGS KT_RAW_HOTPLUGS KT_RAW_SLOT_BASE KT_SPAWN"
for topo in $TOPOS; do
  T=$(date +%s%N)
  echo "=============== topology $topo"
  KT_RUNDIR="$RUN/$topo" "$KT_DIR/boot.sh" "$topo" node test/kernel/guest/suite.mjs
  rc=$?
  echo "$rc" > "$RUN/$topo/boot-rc"
  echo "topology $topo: $(ms "$T") ms (rc $rc; guest: $(tr '\n' ' ' < "$RUN/$topo/guest-timings" 2>/dev/null))" >> "$RUN/timings.txt"
done
echo "total: $(ms "$T0") ms" >> "$RUN/timings.txt"
node "$KT_DIR/lib/summarize.mjs" "$RUN" $TOPOS
