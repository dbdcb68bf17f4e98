#!/usr/bin/env bash
# Submit a multi-node GPU run: sbatch launch/slurm_gpu.sbatch with the job's shape filled in.
#
#   launch/slurm_gpu.sh --nodes 4 --gpus-per-node 8 --partition gpu --time 12:00:00 \
#       --config experiments/grpo.py --run-dir /shared/runs/grpo [--account A] [--job-name J] \
#       [--venv /shared/upt_jax/.venv] [--entry train|pipeline] [--dry-run] [-- upt args ...]
#
# --dry-run prints the sbatch command and the srun command every node would run, and submits
# nothing. Each node's process joins the others through upt_jax.train.distributed.initialize.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "slurm_gpu.sh: $*" >&2; echo "run 'launch/slurm_gpu.sh --help' for usage" >&2; exit 2; }
need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value"; }
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./=:@,+%-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

NODES="" GPUS=8 PARTITION="" ACCOUNT="" TIME="04:00:00" JOB="upt" CONFIG="" RUN_DIR="" VENV=""
ENTRY="train" DRY_RUN=0
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) need_value "$@"; NODES="$2"; shift 2 ;;
    --gpus-per-node) need_value "$@"; GPUS="$2"; shift 2 ;;
    --partition) need_value "$@"; PARTITION="$2"; shift 2 ;;
    --account) need_value "$@"; ACCOUNT="$2"; shift 2 ;;
    --time) need_value "$@"; TIME="$2"; shift 2 ;;
    --job-name) need_value "$@"; JOB="$2"; shift 2 ;;
    --config) need_value "$@"; CONFIG="$2"; shift 2 ;;
    --run-dir) need_value "$@"; RUN_DIR="$2"; shift 2 ;;
    --venv) need_value "$@"; VENV="$2"; shift 2 ;;
    --entry) need_value "$@"; ENTRY="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1'" ;;
  esac
done
[[ -n "$NODES" ]] || die "--nodes is required (number of nodes, one process each)"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, not '$NODES'"
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, not '$GPUS'"
[[ -n "$CONFIG" ]] || die "--config is required (e.g. experiments/grpo.py)"
[[ -n "$RUN_DIR" ]] || die "--run-dir is required (on a shared file system, or gs://)"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script_args=(--config "$CONFIG" --run-dir "$RUN_DIR" --entry "$ENTRY")
[[ -n "$VENV" ]] && script_args+=(--venv "$VENV")
script_args+=(-- "${EXTRA[@]}")
cmd=(sbatch "--nodes=$NODES" --ntasks-per-node=1 "--gpus-per-node=$GPUS" "--time=$TIME" "--job-name=$JOB")
[[ -n "$PARTITION" ]] && cmd+=("--partition=$PARTITION")
[[ -n "$ACCOUNT" ]] && cmd+=("--account=$ACCOUNT")
cmd+=("$HERE/slurm_gpu.sbatch" "${script_args[@]}")

line="+"
for a in "${cmd[@]}"; do line+=" $(quote "$a")"; done
echo "$line"
if [[ "$DRY_RUN" == 1 ]]; then
  echo "# on each of the $NODES nodes:"
  exec bash "$HERE/slurm_gpu.sbatch" --dry-run "${script_args[@]}"
fi
command -v sbatch > /dev/null || die "sbatch not found: run this on a SLURM login node (or use --dry-run)"
exec "${cmd[@]}"
