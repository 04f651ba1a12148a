#!/usr/bin/env bash
# Executes a notebook (default examples/surgeon.ipynb) headless with the Deno Jupyter kernel,
# the way CI does. A failing cell, a cell that runs past the cell timeout, or a whole run past
# the total timeout fails this script (non-zero exit).
#
# Installs what is missing first: Debian's Jupyter (jupyter-notebook jupyter-nbconvert
# python3-ipykernel jupyter-client, via apt-get) and the Deno kernelspec (`deno jupyter
# --install --force`, re-done every run because kernel.json pins the absolute path of the deno
# binary; PLATFORM.md §6).
#
# Usage: scripts/run_notebook.sh [notebook.ipynb]
# Environment:
#   SURGEON_MODEL            model folder or Hub id for the notebook (default: its own choice)
#   NOTEBOOK_OUT_DIR         where the executed copy is written (default runs/notebook)
#   NOTEBOOK_CELL_TIMEOUT    seconds per cell (default 600)
#   NOTEBOOK_TIMEOUT         seconds for the whole run (default 1200)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
notebook="${1:-examples/surgeon.ipynb}"
out_dir="${NOTEBOOK_OUT_DIR:-runs/notebook}"
cell_timeout="${NOTEBOOK_CELL_TIMEOUT:-600}"
total_timeout="${NOTEBOOK_TIMEOUT:-1200}"

if [ ! -f "$notebook" ]; then
  echo "run_notebook: notebook '$notebook' not found (relative to $root)" >&2
  exit 2
fi

# Deno and the npm dependencies (setup.sh is idempotent and quick when everything is there).
if [ ! -x .tools/node_modules/.bin/deno ] || [ ! -d node_modules ]; then
  bash setup.sh
fi

# Jupyter from Debian, when nbconvert or the kernel client is missing.
if ! jupyter nbconvert --version >/dev/null 2>&1 || ! jupyter kernelspec --version >/dev/null 2>&1; then
  echo "run_notebook: installing Jupyter (Debian packages)" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    jupyter-notebook jupyter-nbconvert python3-ipykernel jupyter-client >/dev/null
fi

# The environment every GPU process needs (what ./deno sets for itself); the kernel inherits it
# from nbconvert.
export DENO_WEBGPU_BACKEND="${DENO_WEBGPU_BACKEND:-vulkan}"
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -w "${XDG_RUNTIME_DIR}" ]; then
  export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/llm-surgeon-xdg-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi
export NO_COLOR=1
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
export PYDEVD_DISABLE_FILE_VALIDATION=1

# The Deno kernelspec, pointing at this checkout's pinned deno.
if ! install_log="$(./deno jupyter --install --force 2>&1)"; then
  echo "run_notebook: 'deno jupyter --install --force' failed:" >&2
  echo "$install_log" >&2
  exit 1
fi
kernels="$(jupyter kernelspec list 2>/dev/null || true)"
if ! grep -q '^ *deno ' <<<"$kernels"; then
  echo "run_notebook: the Deno kernelspec is not visible to Jupyter after installing it:" >&2
  echo "$kernels" >&2
  exit 1
fi

mkdir -p "$out_dir"
name="$(basename "$notebook" .ipynb).out.ipynb"

# nbconvert runs with a private TMPDIR: the kernel's connection file is created there, so a kernel
# left behind (nbconvert killed at the total timeout) is found by that path and stopped; a kernel
# that outlives nbconvert would also keep this script's output pipe open.
private_tmp="$(mktemp -d "${TMPDIR:-/tmp}/surgeon-nb.XXXXXX")"
stop_kernels() {
  local pids
  pids="$(pgrep -f -- "--conn $private_tmp/" || true)"
  if [ -n "$pids" ]; then
    echo "run_notebook: stopping the kernel left behind (pid $(echo $pids))" >&2
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
  fi
}
cleanup() {
  stop_kernels
  rm -rf "$private_tmp"
}
trap cleanup EXIT

echo "run_notebook: executing $notebook (cell timeout ${cell_timeout}s, total ${total_timeout}s)" >&2
start=$(date +%s)
TMPDIR="$private_tmp" jupyter nbconvert --to notebook --execute "$notebook" \
  --ExecutePreprocessor.kernel_name=deno \
  --ExecutePreprocessor.timeout="$cell_timeout" \
  --output-dir "$out_dir" --output "$name" &
nbconvert_pid=$!
# Watchdog for the total time: stop the kernel first (it would be orphaned), then nbconvert.
(
  trap 'kill "$sleep_pid" 2>/dev/null; exit 0' TERM
  sleep "$total_timeout" >/dev/null 2>&1 &
  sleep_pid=$!
  wait "$sleep_pid"
  touch "$private_tmp/timed-out"
  echo "run_notebook: total timeout of ${total_timeout}s reached, stopping" >&2
  stop_kernels
  kill "$nbconvert_pid" 2>/dev/null || true
  sleep 10 >/dev/null 2>&1 &
  sleep_pid=$!
  wait "$sleep_pid"
  kill -9 "$nbconvert_pid" 2>/dev/null || true
) &
watchdog_pid=$!
status=0
wait "$nbconvert_pid" || status=$?
kill "$watchdog_pid" 2>/dev/null || true
wait "$watchdog_pid" 2>/dev/null || true
timed_out=0
[ -e "$private_tmp/timed-out" ] && timed_out=1
elapsed=$(( $(date +%s) - start ))
if [ "$timed_out" -eq 1 ]; then
  echo "run_notebook: FAILED: $notebook ran past ${total_timeout}s" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "run_notebook: FAILED: $notebook (exit $status after ${elapsed}s; see the cell error above)" >&2
  exit 1
fi
echo "run_notebook: ok: $notebook in ${elapsed}s -> $out_dir/$name" >&2
