#!/usr/bin/env bash
# Cloud TPU VM slices (multi-host): create, install upt_jax on every worker, run, stream logs,
# stop, delete. Every worker runs the same `upt train` (or `upt pipeline`) command; each one
# reaches jax.distributed.initialize() through upt_jax.train.distributed.initialize
# (UPT_DISTRIBUTED=1: JAX reads the slice's workers from the TPU metadata server).
#
#   launch/tpu_vm.sh create --name upt-v5e --zone us-west4-a --accelerator-type v5litepod-16
#   launch/tpu_vm.sh setup  --name upt-v5e --zone us-west4-a
#   launch/tpu_vm.sh run    --name upt-v5e --zone us-west4-a --config experiments/grpo.py \
#        --run-dir gs://my-bucket/runs/grpo -- --config.mesh.fsdp=16 --config.train.steps=200
#   launch/tpu_vm.sh logs   --name upt-v5e --zone us-west4-a          # tail -f of worker 0
#   launch/tpu_vm.sh stop   --name upt-v5e --zone us-west4-a          # kill the run on all workers
#   launch/tpu_vm.sh delete --name upt-v5e --zone us-west4-a
#   launch/tpu_vm.sh all    ... (create, setup, run, logs)
#
# Options: --project P, --version RUNTIME (default tpu-ubuntu2204-base), --spot,
# --entry train|pipeline, --worker N (logs: which worker; default 0), --dry-run (print the
# commands instead of running them; needs no gcloud). Arguments after `--` go to `upt train`.
# The run directory (checkpoints, metrics) must be one every worker sees: a gs:// bucket path
# (setup installs gcsfs, through which etils.epath reaches gs://) or a shared mount (Filestore/NFS).
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "tpu_vm.sh: $*" >&2; echo "run 'launch/tpu_vm.sh --help' for usage" >&2; exit 2; }

ACTION="${1:-}"
case "$ACTION" in
  -h|--help|help) usage; exit 0 ;;
  create|setup|run|logs|stop|delete|all) shift ;;
  ""|-*) die "missing command (the first argument): one of create, setup, run, logs, stop, delete, all" ;;
  *) die "unknown command '$ACTION': one of create, setup, run, logs, stop, delete, all" ;;
esac

NAME="" ZONE="" PROJECT="" ACCEL="" VERSION="tpu-ubuntu2204-base" SPOT=0 CONFIG="" RUN_DIR=""
ENTRY="train" WORKER=0 DRY_RUN=0
EXTRA=()
need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) need_value "$@"; NAME="$2"; shift 2 ;;
    --zone) need_value "$@"; ZONE="$2"; shift 2 ;;
    --project) need_value "$@"; PROJECT="$2"; shift 2 ;;
    --accelerator-type) need_value "$@"; ACCEL="$2"; shift 2 ;;
    --version) need_value "$@"; VERSION="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --config) need_value "$@"; CONFIG="$2"; shift 2 ;;
    --run-dir) need_value "$@"; RUN_DIR="$2"; shift 2 ;;
    --entry) need_value "$@"; ENTRY="$2"; shift 2 ;;
    --worker) need_value "$@"; WORKER="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1'" ;;
  esac
done

[[ -n "$NAME" ]] || die "--name is required (the TPU VM's name)"
[[ -n "$ZONE" ]] || die "--zone is required (e.g. us-west4-a)"
if [[ "$ACTION" == create || "$ACTION" == all ]]; then
  [[ -n "$ACCEL" ]] || die "--accelerator-type is required to create a slice (e.g. v5litepod-16, v4-32)"
fi
if [[ "$ACTION" == run || "$ACTION" == all ]]; then
  [[ -n "$CONFIG" ]] || die "--config is required to run (e.g. experiments/grpo.py)"
  [[ -n "$RUN_DIR" ]] || die "--run-dir is required to run (a gs:// path every worker can reach)"
  [[ "$ENTRY" == train || "$ENTRY" == pipeline ]] || die "--entry must be train or pipeline, not '$ENTRY'"
  [[ "$RUN_DIR" == gs://* || "$RUN_DIR" == /* ]] || echo "tpu_vm.sh: warning: --run-dir $RUN_DIR is" \
    "relative: it resolves on each worker's own disk; use a bucket or a shared mount every worker sees" >&2
fi
[[ "$WORKER" =~ ^[0-9]+$ ]] || die "--worker must be a worker index, not '$WORKER'"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARBALL="/tmp/upt_jax-${NAME}.tar.gz"
REMOTE_DIR="upt_jax"   # under each worker's home directory
LOG="upt_run.log"
PIDFILE="upt_run.pid"

GCLOUD=(gcloud compute tpus tpu-vm)
COMMON=("--zone=$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=("--project=$PROJECT")

# shlex.quote: a word as is when it is safe, else in single quotes.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./=:@,+%-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
# Print a command (shell-quoted: `+ cmd args`), and run it unless --dry-run.
x() {
  local out="+" a
  for a in "$@"; do out+=" $(quote "$a")"; done
  echo "$out"
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

do_create() {
  local args=(create "$NAME" "${COMMON[@]}" "--accelerator-type=$ACCEL" "--version=$VERSION")
  [[ "$SPOT" == 1 ]] && args+=(--spot)
  x "${GCLOUD[@]}" "${args[@]}"
}

do_setup() {
  # this checkout (committed files) → every worker; jax with the TPU runtime; upt_jax editable
  x git -C "$ROOT" archive --format=tar.gz -o "$TARBALL" HEAD
  x "${GCLOUD[@]}" scp "$TARBALL" "$NAME:upt_jax.tar.gz" "${COMMON[@]}" --worker=all
  x "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command="mkdir -p ~/$REMOTE_DIR \
&& tar xzf ~/upt_jax.tar.gz -C ~/$REMOTE_DIR && cd ~/$REMOTE_DIR \
&& python3 -m pip install -q -e . 'jax[tpu]==0.10.2' gcsfs \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
}

do_run() {
  local args q="" a
  args=(python3 -m upt_jax.cli "$ENTRY" --config "$CONFIG" "--config.run_dir=$RUN_DIR" "${EXTRA[@]}")
  for a in "${args[@]}"; do q+="$(quote "$a") "; done
  # the same command on every worker, detached (an ssh drop does not stop it); the pid is kept for stop
  x "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command="cd ~/$REMOTE_DIR \
&& UPT_DISTRIBUTED=1 nohup ${q% } > ~/$LOG 2>&1 < /dev/null & echo \$! > ~/$PIDFILE"
}

do_logs() {
  x "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" "--worker=$WORKER" --command="tail -n +1 -f ~/$LOG"
}

do_stop() {
  x "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all \
    --command="test -f ~/$PIDFILE && kill \$(cat ~/$PIDFILE) && rm -f ~/$PIDFILE || true"
}

do_delete() {
  x "${GCLOUD[@]}" delete "$NAME" "${COMMON[@]}" --quiet
}

if [[ "$DRY_RUN" == 0 ]] && ! command -v gcloud > /dev/null; then
  die "gcloud not found: install the Google Cloud SDK (or use --dry-run to see the commands)"
fi

case "$ACTION" in
  create) do_create ;;
  setup) do_setup ;;
  run) do_run ;;
  logs) do_logs ;;
  stop) do_stop ;;
  delete) do_delete ;;
  all) do_create; do_setup; do_run; do_logs ;;
esac
