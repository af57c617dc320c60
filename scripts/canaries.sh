#!/usr/bin/env bash
# Harness self-test: build the engine with each deliberately broken durability step (a canary mutant) and run
# the crash, I/O-error, corruption and cloud fault sweeps plus the durability tests. Every mutant must make them fail; a
# surviving mutant means the harness has a blind spot, and this script fails.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
canaries=(canary-ack-before-sync canary-skip-dir-fsync canary-rename-before-fsync canary-retry-fsync canary-ignore-checksum
  canary-trust-listing canary-cloud-ack-before-upload canary-cloud-blind-retry)
caught=0
for c in "${canaries[@]}"; do
  if cargo test -q -p cntryl-midge --features "$c" --test crash_sweep --test durability --test cloud_sweep >"$MIDGE_CACHE/logs/$c.log" 2>&1; then
    echo "canary $c: SURVIVED (the sweeps passed with it)"
  else
    echo "canary $c: caught"
    caught=$((caught + 1))
  fi
done
echo "{\"canaries_planted\":${#canaries[@]},\"canaries_caught\":$caught}"
[ "$caught" -eq "${#canaries[@]}" ]
