# OTLP peers on loopback for integrations/otlp: the `rotel` collector (PyPI) receiving OTLP/HTTP
# and forwarding traces to Arize Phoenix (PyPI), which stores them and answers queries.
# Sourced by .ci/run (bash, set -euo pipefail): exports OBS_OTLP_URL (rotel's OTLP/HTTP base URL),
# OBS_OTLP_GRPC_URL (rotel's OTLP/gRPC endpoint), OBS_PHOENIX_URL and OBS_ROTEL_LOG (rotel's debug
# log of received metrics and logs), appends stop commands to CLEANUP.  Phoenix and rotel live in their own venv
# (855 MB, ~50 s to build), kept at a stable path so later runs on the same machine reuse it.
OBS_OTLP_VENV=${OBS_OTLP_VENV:-/tmp/obs-ci/phoenix-venv}
if ! "$OBS_OTLP_VENV/bin/python" -c 'import phoenix.server.main, rotel' 2>/dev/null; then
  rm -rf "$OBS_OTLP_VENV"
  mkdir -p "$(dirname "$OBS_OTLP_VENV")"
  python3 -m venv "$OBS_OTLP_VENV"
  "$OBS_OTLP_VENV/bin/pip" install -q 'arize-phoenix>=20,<21' 'rotel==0.0.1a15'
fi
OBS_OTLP_DIR=$(mktemp -d /tmp/obs-otlp.XXXXXX)
OBS_PHOENIX_PORT=${OBS_PHOENIX_PORT:-16006}
OBS_ROTEL_PORT=${OBS_ROTEL_PORT:-24318}
# Phoenix's gRPC receiver binds [::] whatever PHOENIX_HOST says: pin every gRPC port to loopback.
cat >"$OBS_OTLP_DIR/phoenix_loopback.py" <<'PY'
import sys

from grpc.aio._server import Server

_insecure, _secure = Server.add_insecure_port, Server.add_secure_port


def _loopback(address):
    return "127.0.0.1:" + address.rsplit(":", 1)[1]


Server.add_insecure_port = lambda self, address: _insecure(self, _loopback(address))
Server.add_secure_port = lambda self, address, creds: _secure(self, _loopback(address), creds)

from phoenix.server.main import main  # noqa: E402

sys.argv = ["phoenix", "serve"]
main()
PY
PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=$OBS_PHOENIX_PORT PHOENIX_GRPC_PORT=${OBS_PHOENIX_GRPC_PORT:-14317} \
PHOENIX_WORKING_DIR=$OBS_OTLP_DIR PHOENIX_TELEMETRY_ENABLED=false PHOENIX_ALLOW_EXTERNAL_RESOURCES=false \
  "$OBS_OTLP_VENV/bin/python" "$OBS_OTLP_DIR/phoenix_loopback.py" >"$OBS_OTLP_DIR/phoenix.log" 2>&1 &
OBS_PHOENIX_PID=$!
CLEANUP+=("kill $OBS_PHOENIX_PID 2>/dev/null; wait $OBS_PHOENIX_PID 2>/dev/null")
OBS_ROTEL_BIN="$("$OBS_OTLP_VENV/bin/python" -c 'import os, rotel; print(os.path.dirname(rotel.__file__))')/rotel-agent"
# Traces go on to Phoenix; Phoenix takes no metrics nor logs, so the suite reads the metrics and
# logs rotel received from its debug log (and rotel gives up forwarding them after a second).
"$OBS_ROTEL_BIN" start \
  --otlp-http-endpoint "127.0.0.1:$OBS_ROTEL_PORT" --otlp-grpc-endpoint "127.0.0.1:${OBS_ROTEL_GRPC_PORT:-24317}" \
  --exporter otlp --otlp-exporter-protocol http --otlp-exporter-endpoint "http://127.0.0.1:$OBS_PHOENIX_PORT" \
  --otlp-exporter-metrics-retry-max-elapsed-time 1s --otlp-exporter-logs-retry-max-elapsed-time 1s \
  --debug-log traces --debug-log metrics --debug-log logs --debug-log-verbosity detailed \
  --pid-file "$OBS_OTLP_DIR/rotel.pid" >"$OBS_OTLP_DIR/rotel.log" 2>&1 &
OBS_ROTEL_PID=$!
CLEANUP+=("kill $OBS_ROTEL_PID 2>/dev/null; wait $OBS_ROTEL_PID 2>/dev/null; rm -rf $OBS_OTLP_DIR")
for _ in $(seq 1 900); do  # up to 3 min: first start runs migrations
  curl -fs "http://127.0.0.1:$OBS_PHOENIX_PORT/healthz" >/dev/null && break
  kill -0 "$OBS_PHOENIX_PID" 2>/dev/null || { tail -50 "$OBS_OTLP_DIR/phoenix.log" >&2; false; }
  sleep 0.2
done
curl -fs "http://127.0.0.1:$OBS_PHOENIX_PORT/healthz" >/dev/null
kill -0 "$OBS_ROTEL_PID" 2>/dev/null || { cat "$OBS_OTLP_DIR/rotel.log" >&2; false; }
export OBS_OTLP_URL="http://127.0.0.1:$OBS_ROTEL_PORT"
export OBS_OTLP_GRPC_URL="http://127.0.0.1:${OBS_ROTEL_GRPC_PORT:-24317}"
export OBS_PHOENIX_URL="http://127.0.0.1:$OBS_PHOENIX_PORT"
export OBS_ROTEL_LOG="$OBS_OTLP_DIR/rotel.log"
echo "otlp: rotel at $OBS_OTLP_URL -> phoenix at $OBS_PHOENIX_URL"
