"""A Flask app, no obs import: ``obs run -- python flask_app.py PORT`` (werkzeug's server) and
``obs run -- gunicorn -w 2 flask_app:app`` (pre-forked sync workers)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from flask import Flask

app = Flask(__name__)


@app.route("/orders/<int:order_id>")
def order(order_id: int) -> dict[str, Any]:
    time.sleep(0.02)  # a busy sync worker leaves the next connection to another one
    return {"order": order_id, "pid": os.getpid()}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
