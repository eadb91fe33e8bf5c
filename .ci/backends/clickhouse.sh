# ClickHouse (Debian's clickhouse-server, 18.16) on loopback for integrations/clickhouse.
# Sourced by .ci/run (bash, set -euo pipefail): installs, starts, exports OBS_CLICKHOUSE_URL and
# appends its stop command to CLEANUP. 
if ! command -v clickhouse-server >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends clickhouse-server >/dev/null
fi
OBS_CH_DIR=$(mktemp -d /tmp/obs-clickhouse.XXXXXX)
OBS_CH_HTTP_PORT=${OBS_CH_HTTP_PORT:-18123}
mkdir -p "$OBS_CH_DIR"/{data,tmp,user_files,format_schemas}
cp /etc/clickhouse-server/users.xml "$OBS_CH_DIR/users.xml"
cat >"$OBS_CH_DIR/config.xml" <<XML
<yandex>
  <logger><level>warning</level><log>$OBS_CH_DIR/server.log</log><errorlog>$OBS_CH_DIR/server.err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$OBS_CH_HTTP_PORT</http_port>
  <tcp_port>${OBS_CH_TCP_PORT:-19000}</tcp_port>
  <path>$OBS_CH_DIR/data/</path>
  <tmp_path>$OBS_CH_DIR/tmp/</tmp_path>
  <user_files_path>$OBS_CH_DIR/user_files/</user_files_path>
  <format_schema_path>$OBS_CH_DIR/format_schemas/</format_schema_path>
  <users_config>$OBS_CH_DIR/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
XML
chown -R clickhouse:clickhouse "$OBS_CH_DIR"
# setpriv execs, so $! is the server itself.
setpriv --reuid=clickhouse --regid=clickhouse --init-groups \
  /usr/sbin/clickhouse-server --config-file="$OBS_CH_DIR/config.xml" >"$OBS_CH_DIR/stdout.log" 2>&1 &
OBS_CH_PID=$!
CLEANUP+=("kill $OBS_CH_PID 2>/dev/null; wait $OBS_CH_PID 2>/dev/null; rm -rf $OBS_CH_DIR")
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$OBS_CH_HTTP_PORT/ping" >/dev/null && break
  kill -0 "$OBS_CH_PID" 2>/dev/null || { cat "$OBS_CH_DIR"/*.log >&2; false; }
  sleep 0.1
done
curl -fs "http://127.0.0.1:$OBS_CH_HTTP_PORT/ping" >/dev/null
export OBS_CLICKHOUSE_URL="http://127.0.0.1:$OBS_CH_HTTP_PORT"
echo "clickhouse ready at $OBS_CLICKHOUSE_URL"
