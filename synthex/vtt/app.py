"""The rater-facing web app (Flask, server-rendered pages + one plain JS file, no build step).

Routes (nothing else is served; every other path is a 404)::

    GET  /                          enter a rater id (new, or to resume)
    POST /start                     -> /rate/<rater>
    GET  /rate/<rater>              the rater's next unanswered image, or "done"
    GET  /rate/<rater>/<image_id>   one image (a locked, answered image is 403)
    POST /rate/<rater>/<image_id>   record answer + confidence, -> /rate/<rater>
    GET  /pixels/<image_id>         the image as little-endian uint16 (H x W), for the canvas
    GET  /static/vtt.js|vtt.css

Image ids are looked up in the study's id set before any file is touched, so a path that is
not exactly a study id (``..``, encoded slashes, ``key.json``) is a 404. Pages are identical
for real and synthetic images except for the opaque id and the progress count.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, abort, redirect, render_template, request, url_for

from synthex.vtt import VTTError
from synthex.vtt.store import ANSWERS, Answer, AnswerStore
from synthex.vtt.study import Study, check_rater_id, decode_uint16, load_study

_HERE = Path(__file__).parent
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def create_app(study_dir: str | Path, lock_answers: bool | None = None) -> Flask:
    """The web app for one study; ``lock_answers`` overrides the study's setting when given."""
    study = load_study(study_dir)
    locked = study.lock_answers if lock_answers is None else lock_answers
    store = AnswerStore(study.answers_path)
    app = Flask(__name__, template_folder=str(_HERE / "templates"), static_folder=str(_HERE / "static"))
    app.config.update(VTT_STUDY=study, VTT_STORE=store, VTT_LOCKED=locked)

    def rater_or_404(rater: str) -> str:
        try:
            return check_rater_id(rater)
        except VTTError:
            abort(404)

    def image_or_404(image_id: str) -> Path:
        try:
            return study.image_path(image_id)
        except KeyError:
            abort(404)

    def progress(rater: str) -> tuple[list[str], set[str]]:
        return study.rater_order(rater), store.answered_ids(rater)

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(_SECURITY_HEADERS)
        for name in ("Last-Modified", "ETag"):  # file times could group images by source
            response.headers.pop(name, None)
        return response

    @app.get("/")
    def start():
        return render_template("start.html", title=study.title, error=None, paused=request.args.get("paused"))

    @app.post("/start")
    def start_post():
        try:
            rater = check_rater_id(request.form.get("rater", ""))
        except VTTError as e:
            return render_template("start.html", title=study.title, error=str(e), paused=None), 400
        return redirect(url_for("next_image", rater=rater))

    @app.get("/rate/<rater>")
    def next_image(rater: str):
        rater = rater_or_404(rater)
        order, answered = progress(rater)
        remaining = [i for i in order if i not in answered]
        if not remaining:
            return render_template("done.html", title=study.title, rater=rater, n=len(order), locked=locked, order=order)
        return _rate_page(rater, remaining[0], order, answered)

    @app.get("/rate/<rater>/<image_id>")
    def image_page(rater: str, image_id: str):
        rater = rater_or_404(rater)
        image_or_404(image_id)
        order, answered = progress(rater)
        if image_id in answered and locked:
            return render_template("message.html", title=study.title, message="This answer is submitted and locked.", rater=rater), 403
        return _rate_page(rater, image_id, order, answered)

    def _rate_page(rater: str, image_id: str, order: list[str], answered: set[str]):
        from PIL import Image

        with Image.open(image_or_404(image_id)) as image:
            width, height = image.size
        position = order.index(image_id)
        previous = store.answer_for(rater, image_id) if not locked else None
        return render_template(
            "rate.html",
            title=study.title,
            rater=rater,
            image_id=image_id,
            width=width,
            height=height,
            number=position + 1,
            n=len(order),
            n_answered=len(answered),
            previous=previous,
            back=order[position - 1] if (not locked and position > 0) else None,
        )

    @app.post("/rate/<rater>/<image_id>")
    def submit(rater: str, image_id: str):
        rater = rater_or_404(rater)
        image_or_404(image_id)
        answer = request.form.get("answer")
        try:
            confidence = int(request.form.get("confidence", ""))
        except ValueError:
            confidence = 0
        if answer not in ANSWERS or confidence not in range(1, 6):
            return render_template(
                "message.html", title=study.title, rater=rater,
                message="Choose real or synthetic and a confidence from 1 to 5.",
            ), 400
        try:
            elapsed = max(0, int(request.form.get("elapsed_ms", "")))
        except ValueError:
            elapsed = None
        store.record(Answer(rater, image_id, answer, confidence, elapsed), allow_change=not locked)
        return redirect(url_for("next_image", rater=rater), code=303)

    @app.get("/pixels/<image_id>")
    def pixels(image_id: str):
        pixels = decode_uint16(image_or_404(image_id).read_bytes())
        return Response(pixels.astype("<u2").tobytes(), mimetype="application/octet-stream")

    @app.errorhandler(404)
    def not_found(_error):
        return render_template("message.html", title=study.title, message="Not found.", rater=None), 404

    @app.errorhandler(405)
    def not_allowed(_error):
        return render_template("message.html", title=study.title, message="Not found.", rater=None), 404

    return app


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, lock_answers: bool | None = None, announce=print) -> None:
    """Serve a study with waitress (a production WSGI server) until interrupted."""
    from waitress import create_server

    app = create_app(study_dir, lock_answers)
    server = create_server(app, host=host, port=port, threads=8, ident="synthex-vtt")
    shown = f"[{host}]" if ":" in host else host
    announce(f"synthex vtt: serving {study_dir} at http://{shown}:{server.effective_port}/ (Ctrl-C to stop)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
