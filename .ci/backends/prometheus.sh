# Prometheus (Debian's package, with promtool) on loopback for integrations/prometheus.
# Sourced by .ci/run (bash, set -euo pipefail). Prometheus scrapes 127.0.0.1:$OBS_PROMETHEUS_TARGET_PORT
# every second (the suite serves an instrumented app there) with the shipped alerts.yml loaded.
# Exports OBS_PROMETHEUS_URL, OBS_PROMETHEUS_TARGET_PORT; appends its stop command to CLEANUP.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
OBS_PROM_DIR=$(mktemp -d /tmp/obs-prometheus.XXXXXX)
OBS_PROMETHEUS_PORT=${OBS_PROMETHEUS_PORT:-19090}
export OBS_PROMETHEUS_TARGET_PORT=${OBS_PROMETHEUS_TARGET_PORT:-19464}
cat >"$OBS_PROM_DIR/prometheus.yml" <<YML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$PWD/src/obs_middleware/exporters/assets/prometheus/alerts.yml]
scrape_configs:
  - job_name: app
    static_configs: [{targets: ['127.0.0.1:$OBS_PROMETHEUS_TARGET_PORT']}]
YML
promtool check config "$OBS_PROM_DIR/prometheus.yml" >/dev/null
prometheus --config.file="$OBS_PROM_DIR/prometheus.yml" --storage.tsdb.path="$OBS_PROM_DIR/data" \
  --web.listen-address="127.0.0.1:$OBS_PROMETHEUS_PORT" --log.level=warn >"$OBS_PROM_DIR/server.log" 2>&1 &
OBS_PROM_PID=$!
CLEANUP+=("kill $OBS_PROM_PID 2>/dev/null; wait $OBS_PROM_PID 2>/dev/null; rm -rf $OBS_PROM_DIR")
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$OBS_PROMETHEUS_PORT/-/ready" >/dev/null && break
  kill -0 "$OBS_PROM_PID" 2>/dev/null || { cat "$OBS_PROM_DIR/server.log" >&2; false; }
  sleep 0.1
done
curl -fs "http://127.0.0.1:$OBS_PROMETHEUS_PORT/-/ready" >/dev/null
export OBS_PROMETHEUS_URL="http://127.0.0.1:$OBS_PROMETHEUS_PORT"
echo "prometheus ready at $OBS_PROMETHEUS_URL, scraping 127.0.0.1:$OBS_PROMETHEUS_TARGET_PORT"
