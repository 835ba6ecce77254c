#!/bin/bash
# ptytile reconstruction: 2 node(s) x 4 = 8 MPI ranks; per node 4 NVIDIA GPUs (CUDA),
# 1 rank(s) per GPU, 16 cores per rank.
# Made by: ptytile jobs --scheduler lsf --gpu-vendor nvidia --nodes 2 --ranks-per-node 4 --gpus-per-node 4 --cores-per-node 64 --time 1:00:00 datasets/pbtio3_thin.toml
# Submit: bsub < THIS_FILE    Check: bash -n THIS_FILE
#BSUB -J ptytile
#BSUB -nnodes 2
#BSUB -W 1:00
##BSUB -P PROJECT   # if your site needs one (ptytile jobs --account)
##BSUB -q QUEUE   # if not the default (ptytile jobs --partition)
#BSUB -o ptytile.%J.out
#BSUB -e ptytile.%J.err
set -euo pipefail

# ---- the run (edit here) ----
PTYTILE=${PTYTILE:-ptytile}
CONFIG=datasets/pbtio3_thin.toml
NODES=2
RANKS_PER_NODE=4
GPUS_PER_NODE=4
CPUS_PER_RANK=16
RANKS=$((NODES * RANKS_PER_NODE))
RANKS_PER_GPU=$((RANKS_PER_NODE / GPUS_PER_NODE))
ARGS=("$PTYTILE" reconstruct "$CONFIG" --set 'parallel.backend="cuda"')

# ---- environment ----
# Site modules (edit), e.g.: module load cuda hdf5 mpich
# GPU backend: cuda (parallel.backend in ARGS): each rank sums its tile's positions on the GPU
# of its node-local rank modulo the GPUs it sees (docs/gpu.md). Every engine runs there;
# multislice and position correction are CPU-only: for them, generate with --set parallel.backend='"cpu"'.
export RAYON_NUM_THREADS="$CPUS_PER_RANK"   # ptytile's worker threads per rank = its bound cores
export OMP_NUM_THREADS=1                     # no nested threading in libraries
export HDF5_USE_FILE_LOCKING=FALSE           # all ranks read one file; locks fail on many parallel file systems
export RUST_LOG="${RUST_LOG:-info}"          # per-iteration log lines in the job's output

cd "${LS_SUBCWD:-.}"
echo "ptytile job ${LSB_JOBID:-}: $RANKS ranks on $NODES nodes, $RANKS_PER_GPU per GPU, $CPUS_PER_RANK cores each, config $CONFIG"

# One resource set per GPU: RANKS_PER_GPU ranks, 1 GPU (jsrun sets CUDA_VISIBLE_DEVICES,
# which HIP honours too) and CPUS_PER_RANK cores bound to each rank. ptytile reads its
# rank from jsrun's environment (JSM_NAMESPACE_RANK/SIZE/LOCAL_RANK).
jsrun --nrs $((NODES * GPUS_PER_NODE)) --rs_per_host "$GPUS_PER_NODE" \
      --tasks_per_rs "$RANKS_PER_GPU" --gpu_per_rs 1 --cpu_per_rs $((RANKS_PER_GPU * CPUS_PER_RANK)) \
      --bind "packed:$CPUS_PER_RANK" --launch_distribution packed \
      "${ARGS[@]}"
