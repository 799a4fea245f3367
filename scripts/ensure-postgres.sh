#!/usr/bin/env bash
# The PostgreSQL half of the suites needs a server at OPENTUNE_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test). Start the machine's cluster if it is installed but down.
set -uo pipefail
case "${DIALECTS:-sqlite,postgres}" in *postgres*) ;; *) exit 0 ;; esac
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then exit 0; fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  for v in /etc/postgresql/*; do pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start 2>/dev/null || true; done
  for _ in $(seq 1 20); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 0.5; done
fi
echo "PostgreSQL is not reachable at 127.0.0.1:5432: start one (database 'test', trust auth) or run with DIALECTS=sqlite" >&2
exit 1
