#!/usr/bin/env bash
# Checks what can be checked of the deployment files without systemd as
# PID 1 or a Docker engine:
#   - both systemd units pass `systemd-analyze verify` and rate an exposure
#     of 4.0 or lower in `systemd-analyze security --offline=yes`;
#   - the example configs pass --check-config with the real binaries, once
#     their CURVE keys exist (made here by keygen), and not before;
#   - docker/compose.yaml and compose.two-tier.yaml pass yamllint, and every service's command line
#     passes --check-config with the real binaries;
#   - the Dockerfile builds with the project's own install script.
# Usage: check-deployment.sh DAEMON_BINARY COORDINATOR_BINARY
set -euo pipefail
daemon=$(realpath "$1") coordinator=$(realpath "$2")
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

# systemd units, with ExecStart pointing at the binaries under test.
for unit in fedsgd-daemon fedsgd-coordinator; do
  sed -e "s#/usr/bin/fedsgd-daemon#$daemon#g" -e "s#/usr/bin/fedsgd-coordinator#$coordinator#g" \
      "$root/systemd/$unit.service" > "$work/$unit.service"
  if out=$(cd "$work" && systemd-analyze verify --man=no "./$unit.service" 2>&1) && [[ -z "$out" ]]; then
    pass "systemd-analyze verify $unit.service"
  else
    fail "systemd-analyze verify $unit.service: $out"
  fi
  level=$(cd "$work" && systemd-analyze security --offline=yes "./$unit.service" 2>/dev/null |
          sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' || true)
  if [[ -n "$level" ]] && awk -v l="$level" 'BEGIN { exit !(l <= 4.0) }'; then
    pass "$unit.service exposure $level <= 4.0"
  else
    fail "$unit.service exposure '${level:-?}' (want <= 4.0)"
  fi
  grep -q '^Type=notify' "$root/systemd/$unit.service" || fail "$unit.service is not Type=notify"
  grep -q '^WatchdogSec=' "$root/systemd/$unit.service" || fail "$unit.service has no WatchdogSec="
  grep -q -- '--check-config' "$root/systemd/$unit.service" || fail "$unit.service does not check its config"
  grep -q '^LoadCredential=' "$root/systemd/$unit.service" || fail "$unit.service passes no CURVE key"
done

# The shipped example configs, with their state paths moved somewhere that exists
# and their CURVE keys (which only exist on a deployed machine) made here by keygen.
mkdir -p "$work/state/daemon/data" "$work/state/coordinator" "$work/etc/authorized-keys" "$work/cred" \
  "$work/run/fedsgd-daemon"
keys_for() {  # CONFIG: the config with /etc/fedsgd and the credentials moved into $work
  sed -e "s#/var/lib/fedsgd#$work/state#g" -e "s#/etc/fedsgd#$work/etc#g" \
      -e "s#/run/credentials/[^/\"]*#$work/cred#g" -e "s#/run/fedsgd-daemon#$work/run/fedsgd-daemon#g" "$1"
}
# Before the keys exist, --check-config must say so and name keygen.
keys_for "$root/systemd/coordinator.json" > "$work/coordinator.json"
if out=$("$coordinator" --config "$work/coordinator.json" --check-config 2>&1); then
  fail "coordinator.json passed --check-config without its CURVE keys"
elif grep -q 'keygen' <<< "$out"; then
  pass "coordinator.json without keys: --check-config names keygen"
else
  fail "coordinator.json without keys: unclear error: $out"
fi
"$coordinator" keygen --out "$work/cred/coordinator" > /dev/null
cp "$work/cred/coordinator.key" "$work/etc/coordinator.key"
"$daemon" keygen --out "$work/cred/device" > /dev/null
cp "$work/cred/device.key" "$work/etc/authorized-keys/board-01.key"
keys_for "$root/systemd/daemon.json" > "$work/daemon.json"
"$daemon" --config "$work/daemon.json" --check-config > /dev/null && pass "daemon.json --check-config" ||
  fail "systemd/daemon.json does not pass --check-config"
"$coordinator" --config "$work/coordinator.json" --check-config > /dev/null && pass "coordinator.json --check-config" ||
  fail "systemd/coordinator.json does not pass --check-config"
# ... and --check-config does fail on a broken config.
echo '{"coordinator": "tcp://nowhere", "data": "/nonexistent"}' > "$work/bad.json"
if "$daemon" --config "$work/bad.json" --check-config > /dev/null 2>&1; then
  fail "a broken daemon config passed --check-config"
else
  pass "a broken daemon config fails --check-config"
fi

# The compose files: the flat fleet and the two-tier one (a root, gateways).
for compose_file in compose.yaml compose.two-tier.yaml; do
  if yamllint -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}' \
       "$root/docker/$compose_file"; then
    pass "yamllint docker/$compose_file"
  else
    fail "yamllint docker/$compose_file"
  fi
  services=0
  while IFS=$'\t' read -r name program args; do
    services=$((services + 1))
    binary=$daemon
    [[ "$program" == fedsgd-coordinator ]] && binary=$coordinator
    # Paths inside the container that the host does not have.
    args=${args//\/var\/lib\/fedsgd/$work\/state}
    # shellcheck disable=SC2086
    if out=$("$binary" $args --check-config 2>&1); then
      pass "$compose_file service $name: $program --check-config"
    else
      fail "$compose_file service $name: $out"
    fi
  done < <(/usr/bin/python3 - "$root/docker/$compose_file" <<'PY'
import sys, yaml
compose = yaml.safe_load(open(sys.argv[1]))
for name, service in compose["services"].items():
    command = service["command"]
    print(name, command[0], " ".join(command[1:]), sep="\t")
PY
  )
  [[ $services -ge 5 ]] ||
    fail "$compose_file should run a coordinator and several daemons (found $services services)"
done
grep -q -- '--upstream=tcp://root:7070' "$root/docker/compose.two-tier.yaml" &&
  pass "compose.two-tier.yaml runs gateways of its root" ||
  fail "compose.two-tier.yaml has no gateway (--upstream=tcp://root:7070)"
grep -q 'scripts/install-deps.sh' "$root/docker/Dockerfile" && pass "Dockerfile uses scripts/install-deps.sh" ||
  fail "the Dockerfile does not build with scripts/install-deps.sh"
grep -q '^USER ' "$root/docker/Dockerfile" && pass "Dockerfile runs as a non-root user" ||
  fail "the Dockerfile runs as root"
grep -q 'bookworm-slim' "$root/docker/Dockerfile" || fail "the run-time stage is not bookworm-slim"

echo "$((failures == 0 ? 1 : 0)) passed, $((failures > 0 ? 1 : 0)) failed: deployment ($failures problem(s))"
exit $((failures > 0))
