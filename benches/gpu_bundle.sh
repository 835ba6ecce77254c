#!/usr/bin/env bash
# Bundle ptytile and the tests/gpu.rs binary, with the shared libraries they link that a bare
# GPU host may lack (HDF5, MPI, …; not glibc), into .gpu/ (ignored by git) for the device
# machine's `carry` (docs/gpu.md, "On a GPU host"). Build first:
#   cargo build --release && cargo test --release --test gpu --no-run
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu
rm -rf "$out"
mkdir -p "$out/lib"
exe=$(cargo test --release --test gpu --no-run --message-format=json 2>/dev/null | python3 -c '
import sys, json
for line in sys.stdin:
    j = json.loads(line)
    if j.get("reason") == "compiler-artifact" and j.get("executable") and j["target"]["name"] == "gpu":
        print(j["executable"])' | tail -1)
[ -n "$exe" ] || { echo "gpu_bundle: no tests/gpu.rs binary; run: cargo test --release --test gpu --no-run" >&2; exit 1; }
cp target/release/ptytile "$out/ptytile"
cp "$exe" "$out/gpu-tests"
strip --strip-debug "$out/ptytile" "$out/gpu-tests"
for b in "$out/ptytile" "$out/gpu-tests"; do
  ldd "$b" | awk '/=> \//{print $3}' | while read -r l; do
    case $(basename "$l") in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
      *) [ -e "$out/lib/$(basename "$l")" ] || cp -L "$l" "$out/lib/" ;;
    esac
  done
done
du -sh "$out"
ls "$out" "$out/lib"
