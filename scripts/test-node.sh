#!/usr/bin/env bash
# Node side: typecheck, lint, then every test/**/*.test.ts on both stores (DIALECTS narrows it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-postgres.sh
npx tsc --noEmit
npx tsc -p web  # the dashboard (DOM types, its own tsconfig)
npx eslint .
mapfile -t files < <(find test -name '*.test.ts' | sort)
npx tsx --test --test-concurrency=2 "${files[@]}"
