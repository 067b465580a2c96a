"""An ordinary Falcon application, served unchanged by tailfast and by wsgiref."""

import falcon


class Items:
    def on_get(self, req, resp, item_id):
        resp.media = {"id": item_id, "q": req.get_param_as_list("q") or []}

    def on_post(self, req, resp, item_id):
        resp.media = {"id": item_id, "received": req.get_media()}
        resp.status = falcon.HTTP_201


class Form:
    def on_post(self, req, resp):
        form = req.get_media()  # urlencoded form
        resp.media = {"fields": dict(form)}


class Upload:
    def on_post(self, req, resp):
        parts = {}
        for part in req.get_media():
            data = part.stream.read()
            parts[part.name] = {"filename": part.filename, "size": len(data)}
        resp.media = parts


class Cookies:
    def on_get(self, req, resp):
        resp.set_cookie("flavor", "falcon", secure=False)
        resp.media = {"seen": req.cookies}


class Redirect:
    def on_get(self, req, resp):
        raise falcon.HTTPFound("/items/7")


class Stream:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = iter([b"alpha\n", b"beta\n", b"gamma\n"])


class Boom:
    def on_get(self, req, resp):
        raise RuntimeError("falcon handler failed")


app = falcon.App()
app.req_options.auto_parse_form_urlencoded = False
app.add_route("/items/{item_id:int}", Items())
app.add_route("/form", Form())
app.add_route("/upload", Upload())
app.add_route("/cookies", Cookies())
app.add_route("/go", Redirect())
app.add_route("/stream", Stream())
app.add_route("/boom", Boom())
