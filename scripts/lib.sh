# shellcheck shell=bash
# Shared helpers for Herald's service scripts (scripts/kafka, scripts/postgres).
# Source it; it defines functions only and changes no shell options.

# The cache root shared by all service scripts: downloaded jars, run folders.
HERALD_CACHE="${HERALD_CACHE:-${HOME:-/root}/.cache/herald}"

# log MSG...: a progress line on stderr, prefixed with the calling script's name.
log() {
  printf '%s: %s\n' "${HERALD_SCRIPT_NAME:-${0##*/}}" "$*" >&2
}

# die MSG...: print an error on stderr and exit 1.
die() {
  printf '%s: error: %s\n' "${HERALD_SCRIPT_NAME:-${0##*/}}" "$*" >&2
  exit 1
}

# pid_alive PID: true when a process with that pid exists (and is not a zombie).
pid_alive() {
  local pid="$1" state
  [[ -n "$pid" && "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A zombie still answers kill -0; treat it as dead.
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  [[ "$state" != "Z" ]]
}

# pid_cmdline_has PID TEXT: true when the process's command line contains TEXT.
pid_cmdline_has() {
  local pid="$1" text="$2"
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$text"
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  # shellcheck disable=SC2016  # $1 expands in the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# stop_pid PID TIMEOUT_SECONDS NAME: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid="$1" limit="$2" name="$3" waited=0
  pid_alive "$pid" || return 0
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  while pid_alive "$pid"; do
    if (( waited >= limit * 10 )); then
      log "$name did not stop within ${limit}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

# use_cargo: put rustup's ~/.cargo/bin on PATH when cargo is not there yet.
use_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
    export PATH
  fi
}
