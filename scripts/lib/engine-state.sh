# shellcheck shell=bash
# What the test and bench scripts ask about the Docker engine. Sourced; needs RUN_DIR (where
# scripts/docker-up.sh keeps the PIDs of what it started).

# The engine on /var/run/docker.sock (or DOCKER_HOST) answers.
docker_ready() { timeout 10 docker info >/dev/null 2>&1; }

# alive PID NAME: the process exists, is not a zombie and is still NAME (guards against PID reuse).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
  # field 3 (after the "(comm)" field) is the state
  [ "$(echo "${stat##*) }" | cut -d' ' -f1)" != Z ]
}

# An engine scripts/docker-up.sh started is still (partly) running.
ours_running() {
  local n
  for n in dockerd containerd; do
    [ -f "$RUN_DIR/$n.pid" ] && alive "$(cat "$RUN_DIR/$n.pid")" "$n" && return 0
  done
  return 1
}
