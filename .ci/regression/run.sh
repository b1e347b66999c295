#!/usr/bin/env bash
# Re-fit the regression configs and compare each run with the expectations committed beside it,
# as a user's CI would: `ude fit` then `ude compare RUN EXPECTED` (exit 5 on a mismatch).
# To refresh an expectation after an intended change: ude compare RUN .ci/regression/NAME.expected.json --save --rtol 1e-3
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
for config in "$here"/*.yaml; do
  name="$(basename "$config" .yaml)"
  ude fit "$config" --out "$out/$name" --quiet --no-plots
  ude compare "$out/$name" "$here/$name.expected.json" --quiet || status=$?
done
exit $status
