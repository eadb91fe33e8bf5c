# PostgreSQL 15 on loopback for integrations/sqlalchemy (psycopg 3 and asyncpg suites).
# Sourced by .ci/run (bash, set -euo pipefail): installs the server if missing, runs initdb into a
# temporary directory (as the postgres user: initdb and postgres refuse root), starts it on
# 127.0.0.1 at a free port (or $OBS_PG_PORT), exports OBS_TEST_PG_URL and appends its stop command
# to CLEANUP. 
OBS_PG_BIN=/usr/lib/postgresql/15/bin
if [ ! -x "$OBS_PG_BIN/pg_ctl" ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends --no-upgrade postgresql-15 >/dev/null
fi
OBS_PG_DIR=$(mktemp -d /tmp/obs-postgres.XXXXXX)
OBS_PG_AS=()
if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$OBS_PG_DIR"
  OBS_PG_AS=(runuser -u postgres --)
fi
chmod 700 "$OBS_PG_DIR"
OBS_PG_PORT=${OBS_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
# Registered before the start so a failed start still removes the directory.
CLEANUP+=("${OBS_PG_AS[*]} $OBS_PG_BIN/pg_ctl -D $OBS_PG_DIR/data -m fast -w stop >/dev/null 2>&1; rm -rf $OBS_PG_DIR")
"${OBS_PG_AS[@]}" "$OBS_PG_BIN/initdb" -D "$OBS_PG_DIR/data" -U postgres --auth=trust -E UTF8 \
  --locale=C.UTF-8 >/dev/null
# fsync off: a throwaway test cluster; listen on loopback only (trust auth).
if ! "${OBS_PG_AS[@]}" "$OBS_PG_BIN/pg_ctl" -D "$OBS_PG_DIR/data" -l "$OBS_PG_DIR/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $OBS_PG_PORT -k $OBS_PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null; then
  cat "$OBS_PG_DIR/server.log" >&2
  false
fi
"$OBS_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$OBS_PG_PORT"
export OBS_TEST_PG_URL="postgresql://postgres@127.0.0.1:$OBS_PG_PORT/postgres"
echo "postgres ready at $OBS_TEST_PG_URL"
