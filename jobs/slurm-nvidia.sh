#!/bin/bash
# ptytile reconstruction: 2 node(s) x 4 = 8 MPI ranks; per node 4 NVIDIA GPUs (CUDA),
# 1 rank(s) per GPU, 16 cores per rank.
# Made by: ptytile jobs --scheduler slurm --gpu-vendor nvidia --nodes 2 --ranks-per-node 4 --gpus-per-node 4 --cores-per-node 64 --time 1:00:00 datasets/pbtio3_thin.toml
# Submit: sbatch THIS_FILE    Check: bash -n THIS_FILE
#SBATCH --job-name=ptytile
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-node=4
#SBATCH --time=1:00:00
##SBATCH --account=ACCOUNT   # if your site needs one (ptytile jobs --account)
##SBATCH --partition=PARTITION   # if not the default (ptytile jobs --partition)
#SBATCH --output=ptytile-%j.out
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

# The allocation must match the script (ptytile would otherwise run on a different tiling).
if [ -n "${SLURM_JOB_NUM_NODES:-}" ] && [ "$SLURM_JOB_NUM_NODES" -ne "$NODES" ]; then
  echo "ptytile job: Slurm gave $SLURM_JOB_NUM_NODES nodes, the script needs $NODES" >&2; exit 2
fi
if [ -n "${SLURM_NTASKS:-}" ] && [ "$SLURM_NTASKS" -ne "$RANKS" ]; then
  echo "ptytile job: Slurm gave $SLURM_NTASKS tasks, the script needs $RANKS" >&2; exit 2
fi
cd "${SLURM_SUBMIT_DIR:-.}"
echo "ptytile job ${SLURM_JOB_ID:-}: $RANKS ranks on $NODES nodes, $RANKS_PER_GPU per GPU, $CPUS_PER_RANK cores each, config $CONFIG"

# Node-local rank r gets GPU r / RANKS_PER_GPU (Slurm sets CUDA_VISIBLE_DEVICES to it) and
# CPUS_PER_RANK cores of its own; ptytile reads its rank from srun's environment.
GPU_MAP=$(for ((r = 0; r < RANKS_PER_NODE; r++)); do printf '%d,' $((r / RANKS_PER_GPU)); done)
srun --nodes="$NODES" --ntasks="$RANKS" --ntasks-per-node="$RANKS_PER_NODE" \
     --cpus-per-task="$CPUS_PER_RANK" --cpu-bind=cores \
     --gpus-per-node="$GPUS_PER_NODE" --gpu-bind="map_gpu:${GPU_MAP%,}" \
     "${ARGS[@]}"
