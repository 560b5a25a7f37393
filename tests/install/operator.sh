#!/usr/bin/env bash
# Installs leash into a temporary prefix and checks what an operator gets:
# the programs, the library, the systemd units naming the installed leashd
# (systemd-analyze verify), the config leashd accepts, man pages that render
# without warnings, bash completion that completes.
set -euo pipefail
build=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
p=$tmp/prefix
cmake --install "$build" --prefix "$p" >/dev/null
fail() { echo "install.operator: $*" >&2; exit 1; }

for f in sbin/leashd bin/leashctl include/leash.h etc/leash/leashd.conf \
         lib/systemd/system/leashd.service lib/systemd/system/leashd.socket \
         share/man/man8/leashd.8 share/man/man1/leashctl.1 share/man/man3/leash.3 \
         share/man/man5/leashd.conf.5 share/bash-completion/completions/leashctl \
         share/leash/leash-alerts.yml; do
  [[ -f $p/$f ]] || fail "$f is not installed"
done
ls "$p"/lib*/libleash.so* "$p"/lib*/pkgconfig/leash.pc "$p"/lib*/cmake/leash/leashConfig.cmake \
  >/dev/null || fail "the library, leash.pc or the CMake package is missing"

# the CMake package carries nothing of this build: no -Werror, no source path
if grep -rlE -- "-Werror|$src" "$p"/lib*/cmake/leash "$p"/lib*/pkgconfig; then
  fail "the installed CMake package or leash.pc names this build's flags or paths"
fi

# the unit runs the installed leashd on the installed config, which is good
grep -qx "ExecStart=$p/sbin/leashd --config $p/etc/leash/leashd.conf" \
  "$p/lib/systemd/system/leashd.service" || fail "ExecStart does not name the installed leashd"
"$p/sbin/leashd" --check-config --config "$p/etc/leash/leashd.conf" >/dev/null ||
  fail "the installed config is refused"
MANPATH=$p/share/man systemd-analyze verify "$p/lib/systemd/system/leashd.service" \
  "$p/lib/systemd/system/leashd.socket" || fail "systemd-analyze verify failed"

# every key the installed config shows (set, or commented out) is in leashd.conf(5)
for k in $(sed -nE 's/^(# )?([a-z_]+) *=.*/\2/p' "$p/etc/leash/leashd.conf"); do
  grep -qx "\.B $k" "$p/share/man/man5/leashd.conf.5" || fail "leashd.conf(5) does not document $k"
done
# man pages: rendered without a warning, and found by name
for page in "$p"/share/man/man*/*; do
  out=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page failed"
  [[ -z $out ]] || fail "man warns on $page: $out"
done
MANPATH=$p/share/man man -w leashctl >/dev/null || fail "man leashctl finds nothing"

"$p/bin/leashctl" --version | grep -q '^leashctl ' || fail "leashctl --version"
for c in status ps top tasks dump incidents cancel kill reload help; do
  "$p/bin/leashctl" "$c" --help >/dev/null || fail "leashctl $c --help"
done

# bash completion: commands, then a command's options
complete_line() { # the words of COMP_LINE: what completion offers for the last
  bash -c '. /usr/share/bash-completion/bash_completion
           . "$1"; shift
           COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
           _leashctl leashctl "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
           printf "%s\n" "${COMPREPLY[@]}"' _ "$p/share/bash-completion/completions/leashctl" "$@"
}
[[ $(complete_line leashctl du) == dump ]] || fail "completion: leashctl du"
complete_line leashctl dump --f | grep -qx -- '--format=' || fail "completion: dump --f"
[[ $(complete_line leashctl dump --format f) == folded ]] || fail "completion: --format f"
[[ $(complete_line leashctl --socket=/nonexistent ps -) == *--no-headers* ]] ||
  fail "completion: ps options after --socket"
[[ -z $(complete_line leashctl cancel 12 "") ]] || fail "completion: cancel's GROUP"
echo "installed: programs, library, units (verified), config, man pages, completion"
