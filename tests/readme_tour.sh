#!/bin/sh
# The README's tour of the API is examples/tour.c, whole: the first ```c block
# after "## A tour of the API" must equal the file, so that it compiles as it stands.
# Usage: readme_tour.sh README.md examples/tour.c
set -eu
awk '/^## A tour of the API/ { tour = 1 }
     tour && /^```c$/ { inside = 1; next }
     inside && /^```$/ { exit }
     inside { print }' "$1" | diff -u "$2" - && echo "the README's tour is $2"
