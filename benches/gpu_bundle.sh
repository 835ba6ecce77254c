#!/usr/bin/env bash
# Bundle ptytile and the tests/gpu.rs binary, with the shared libraries they link that a bare
# GPU host may lack (HDF5, MPICH and their dependencies; not glibc), into
# .gpu/ptytile-gpu.tar.gz (.gpu/ is ignored by git) for the device machine's `carry`
# (docs/gpu.md, "On a GPU host"); compressed because libmpich alone is 41 MB and a carry
# holds at most 64 MiB. Build first:
#   cargo build --release && cargo test --release --test gpu --no-run
# On the GPU host: mkdir -p /tmp/g && tar xzf .gpu/ptytile-gpu.tar.gz -C /tmp/g
#   (then /tmp/g/ptytile, /tmp/g/gpu-tests, LD_LIBRARY_PATH=/tmp/g/lib)
set -euo pipefail
cd "$(dirname "$0")/.."
stage=target/gpu-bundle
rm -rf "$stage" .gpu
mkdir -p "$stage/lib" .gpu
exe=$(cargo test --release --test gpu --no-run --message-format=json 2>/dev/null | python3 -c '
import sys, json
for line in sys.stdin:
    j = json.loads(line)
    if j.get("reason") == "compiler-artifact" and j.get("executable") and j["target"]["name"] == "gpu":
        print(j["executable"])' | tail -1)
[ -n "$exe" ] || { echo "gpu_bundle: no tests/gpu.rs binary; run: cargo test --release --test gpu --no-run" >&2; exit 1; }
cp target/release/ptytile "$stage/ptytile"
cp "$exe" "$stage/gpu-tests"
strip --strip-debug "$stage/ptytile" "$stage/gpu-tests"
for b in "$stage/ptytile" "$stage/gpu-tests"; do
  ldd "$b" | awk '/=> \//{print $3}' | while read -r l; do
    case $(basename "$l") in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
      *) [ -e "$stage/lib/$(basename "$l")" ] || cp -L "$l" "$stage/lib/" ;;
    esac
  done
done
strip --strip-unneeded "$stage"/lib/*.so*
tar czf .gpu/ptytile-gpu.tar.gz -C "$stage" .
du -sh "$stage" .gpu/ptytile-gpu.tar.gz
