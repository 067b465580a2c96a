"""An ordinary Flask application, served unchanged by tailfast and by wsgiref."""

from flask import Flask, Response, abort, jsonify, make_response, redirect, request, url_for

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from flask"


@app.get("/user/<name>")
def user(name):
    return jsonify(name=name, q=request.args.getlist("q"))


@app.post("/json")
def echo_json():
    data = request.get_json()
    return jsonify(received=data, type=type(data).__name__), 201


@app.post("/form")
def form():
    return jsonify(fields=request.form.to_dict(flat=False))


@app.post("/upload")
def upload():
    f = request.files["file"]
    content = f.read()
    return jsonify(filename=f.filename, size=len(content), head=content[:8].decode("latin-1"),
                   note=request.form.get("note"))


@app.get("/cookie/set")
def set_cookie():
    resp = make_response("cookie set")
    resp.set_cookie("flavor", "oatmeal")
    resp.set_cookie("size", "large", httponly=True)
    return resp


@app.get("/cookie/get")
def get_cookie():
    return jsonify(dict(request.cookies))


@app.get("/go")
def go():
    return redirect(url_for("user", name="target"))


@app.get("/stream")
def stream():
    def generate():
        for i in range(5):
            yield f"line {i}\n"
    return Response(generate(), mimetype="text/plain")


@app.get("/boom")
def boom():
    raise RuntimeError("flask handler failed")


@app.get("/forbidden")
def forbidden():
    abort(403)
