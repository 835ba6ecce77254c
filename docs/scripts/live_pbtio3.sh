#!/bin/bash
# Live reconstruction figures (docs/performance.md, "Live reconstruction"): pbtio3_thin.h5
# reconstructed offline, then streamed by `ptytile stream` at RATE frames/s (default 1000)
# into `ptytile reconstruct --live` with the shipped config (4 thread ranks); prints both
# phase correlations and the live result's timing attributes.
# Run from the repository root after `cargo build --release`.
#   docs/scripts/live_pbtio3.sh                              # Must show 1
#   SEXTRA="--drop 50 --corrupt 5" docs/scripts/live_pbtio3.sh   # Must show 2
set -e
B=target/release/ptytile
D=$(realpath ../shared/datasets/pbtio3_thin.h5)
O=${OUT:-out/live_pbtio3}
rm -rf "$O"; mkdir -p "$O"
EP=${ENDPOINT:-tcp://127.0.0.1:5655}
SET=(--set data.file="\"$D\"" --set output.png=false)
t0=$(date +%s.%N)
$B reconstruct datasets/pbtio3_thin.toml "${SET[@]}" --output "$O/offline.h5" >/dev/null 2>&1
t1=$(date +%s.%N)
echo "offline process seconds: $(echo "$t1 - $t0" | bc)"
RUST_LOG=info $B reconstruct datasets/pbtio3_thin.toml "${SET[@]}" --output "$O/live.h5" --live "$EP" 2> "$O/live.log" >/dev/null &
LP=$!
sleep 0.5
# shellcheck disable=SC2086
$B stream datasets/pbtio3_thin.toml --set data.file="\"$D\"" --endpoint "$EP" --rate "${RATE:-1000}" $SEXTRA
wait $LP
echo "offline: $($B compare "$O/offline.h5" "$D" | head -1)"
echo "live:    $($B compare "$O/live.h5" "$D" | head -1)"
$B inspect "$O/offline.h5" | grep '@wall_time_s'
$B inspect "$O/live.h5" | grep -E '@live_|@wall_time_s'
