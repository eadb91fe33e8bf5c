"""``obs run -- python flask_app.py PORT``: a Flask app on werkzeug's server, no obs import."""

from __future__ import annotations

import sys

from flask import Flask

app = Flask(__name__)


@app.route("/orders/<int:order_id>")
def order(order_id: int) -> str:
    return f"order {order_id}"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
