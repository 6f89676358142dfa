# Run a list of commands on the device machine within one call's time, then pack what they wrote.
#   bash workflow/scripts/device_drive.sh <40-hex commit> <deadline-s> <cmdfile>
# Each non-empty line of <cmdfile> runs under `timeout` of the time left (less 25 s for packing).
# Everything under results/ written during the call (except checkpoints, token files and
# TensorBoard events) is packed into $OUT/results.tgz: untar it in the checkout here at once. The
# pack is found by modification time rather than by a list of folders, so no output is left
# behind because a list missed it (session 6 lost two finished benches that way).
set -u
source workflow/scripts/device_env.sh "$1" || exit 1
deadline=$2
stamp=$(mktemp) && touch "$stamp"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
while IFS= read -r cmd; do
  [ -z "$cmd" ] && continue
  left=$((deadline - SECONDS - 25)); [ "$left" -le 10 ] && { echo "== no time for: $cmd"; continue; }
  echo "== [$(date +%T) ${SECONDS}s, ${left}s left] $cmd"
  timeout "$left" bash -c "$cmd" 2>&1 | grep -v "torch/_logging" | tail -40
  echo "   rc=${PIPESTATUS[0]}"
done < "$3"
find results -type f -newer "$stamp" \
  -not -path "*/checkpoints/*" -not -path "*/tokens/*" -not -path "*/tb/*" > "$OUT/packed.txt"
tar czf "$OUT/results.tgz" -T "$OUT/packed.txt"
echo "elapsed ${SECONDS}s; packed $(wc -l < "$OUT/packed.txt") files:"; sed 's/^/  /' "$OUT/packed.txt" | head -60
