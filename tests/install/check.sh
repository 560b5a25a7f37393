#!/usr/bin/env bash
# Installs leash into a temporary prefix and builds a consumer against it
# twice: with pkg-config and with CMake's find_package(leash).
set -euo pipefail
build=$1
src=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null

export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig:$tmp/prefix/lib/$(gcc -print-multiarch)/pkgconfig"
cc -std=c11 "$src/consumer.c" $(pkg-config --cflags --libs leash) -o "$tmp/by-pkgconfig"
LD_LIBRARY_PATH=$(pkg-config --variable=libdir leash) "$tmp/by-pkgconfig"

cmake -S "$src" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
LD_LIBRARY_PATH=$(pkg-config --variable=libdir leash) "$tmp/cm/consumer"
echo "pkg-config and find_package consumers ran"
