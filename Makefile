# ptytile — quick start: `make demo` (main job on the shipped data) and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/ptytile
DATA ?= ../shared/datasets/pbtio3_thin.h5
OUT ?= out
export RUST_LOG ?= warn

.PHONY: all deps build demo demo-thick test bench clean

all: build

deps:
	@./.ci/install-deps

build: deps
	$(CARGO) build --release

# Reconstruct the PbTiO3 dataset (dose 1e5, probe formed from the metadata, Poisson model,
# probe refinement) and compare with its ground truth. Without the dataset: simulate a small
# one and reconstruct that.
demo: build
	@if [ -f "$(DATA)" ]; then \
	  set -e; data=$$(realpath "$(DATA)"); \
	  echo "== reconstructing $$data"; \
	  $(BIN) reconstruct datasets/pbtio3_thin.toml --set data.file="\"$$data\"" --output $(OUT)/pbtio3_thin/recon.h5; \
	  echo "== comparing with the ground truth"; \
	  $(BIN) compare $(OUT)/pbtio3_thin/recon.h5 "$$data"; \
	  echo "== result: $(OUT)/pbtio3_thin/recon.h5 (PNG images beside it: $(OUT)/pbtio3_thin/recon_*.png)"; \
	else \
	  set -e; echo "== $(DATA) not found: simulating a small dataset instead"; \
	  $(BIN) simulate --output $(OUT)/sim/sim.h5 --scan 20x20 --probe-size 64; \
	  $(BIN) reconstruct $(OUT)/sim/sim.toml --output $(OUT)/sim/recon.h5; \
	  $(BIN) compare $(OUT)/sim/recon.h5 $(OUT)/sim/sim.h5; \
	  echo "== result: $(OUT)/sim/recon.h5 (PNG images beside it: $(OUT)/sim/recon_*.png)"; \
	fi

# The thick PbTiO3 specimen (33 Å, ../shared/datasets/pbtio3_thick_dev.h5): the shipped
# multislice config (8 slices, mlcg, 50 iterations, 4 ranks) and the single-slice model with
# the same engine and iterations; prints both projected-phase correlations with the truth's
# projected potential (docs/compare.md, docs/algorithms.md).
THICK ?= ../shared/datasets/pbtio3_thick_dev.h5
demo-thick: build
	@set -e; data=$$(realpath "$(THICK)"); pot=/ground_truth/projected_potential_recon; \
	echo "== multislice: reconstructing $$data"; \
	$(BIN) reconstruct datasets/pbtio3_thick.toml --set data.file="\"$$data\"" --output $(OUT)/pbtio3_thick/multislice.h5; \
	echo "== single slice, same engine and iterations"; \
	$(BIN) reconstruct datasets/pbtio3_thick.toml --set data.file="\"$$data\"" --set reconstruction.slices=1 --output $(OUT)/pbtio3_thick/single.h5; \
	echo "== projected-phase correlation, multislice:"; \
	$(BIN) compare $(OUT)/pbtio3_thick/multislice.h5 "$$data" --truth-dataset $$pot; \
	echo "== projected-phase correlation, single slice:"; \
	$(BIN) compare $(OUT)/pbtio3_thick/single.h5 "$$data" --truth-dataset $$pot

# The whole suite. cargo-nextest runs each test in its own process (needed once MPI tests
# exist); plain cargo test otherwise. First, the GPU backends must build on a machine with
# neither CUDA nor ROCm (they are default features; this names them in case that changes).
# tests/gpu.rs compiles the GPU kernels when libnvrtc is on LD_LIBRARY_PATH (.ci/nvrtc).
# The code must be as `cargo fmt` writes it (rustfmt defaults) and free of clippy warnings
# (the crate's allowed lints: src/lib.rs): these checks come first.
test: deps
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --features cuda,hip -- -D warnings
	$(CARGO) build --release --features cuda,hip
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --release --no-fail-fast; \
	else \
	  $(CARGO) test --release --no-fail-fast; \
	fi

# Time per iteration on the PbTiO3 data, with a breakdown (docs/performance.md).
bench: build
	$(BIN) bench datasets/pbtio3_thin.toml --set data.file="\"$$(realpath $(DATA))\""

clean:
	$(CARGO) clean
	rm -rf $(OUT)
