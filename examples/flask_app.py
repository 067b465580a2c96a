"""A Flask application built by a factory: `tailfast run 'examples.flask_app:create_app()'`."""

import os

from flask import Flask, jsonify, request


def create_app(mode: str = "development") -> Flask:
    """Flask's documented layout: the app is made by a function, once per process
    that imports it (the primary, or each worker with --no-preload)."""
    app = Flask(__name__)
    app.config["MODE"] = mode

    @app.get("/")
    def index() -> str:
        return "Hello from Flask!"

    @app.get("/hello/<name>")
    def hello(name: str):  # type: ignore[no-untyped-def]
        return jsonify(hello=name, mode=app.config["MODE"], pid=os.getpid(),
                       q=request.args.get("q"))

    return app
