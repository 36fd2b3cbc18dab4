"""The rater-facing web app (Flask, server-rendered pages + one plain JS file, no build step).

Routes (nothing else is served; every other path is a 404)::

    GET  /                          start page: join the study (when enrolment is open)
    POST /start                     new rater id -> a private link /r/<token>
    GET  /r/<token>                 the rater's next unanswered image, or "done"
    GET  /r/<token>/<image_id>      one image (a locked, answered image is 403)
    POST /r/<token>/<image_id>      record answer + confidence, -> /r/<token>
    GET  /pixels/<image_id>         the image as little-endian uint16 (H x W), for the canvas
    GET  /static/vtt.js|vtt.css

Security:

- **identity**: a rater is their private link (32 random hex digits; ``synthex vtt invite``
  makes them, or the start page for a new id when enrolment is open). A rater id alone gives
  no access: an existing id typed on the start page is refused;
- **CSRF**: every form carries a token, HMAC-SHA256 of the rater's link (or of "start") under a
  secret kept in answers.sqlite; a POST without the right token, or with an ``Origin`` of another
  site, is refused (403);
- **Host allow-list**: requests whose ``Host`` is not an allowed name are refused (400), so a
  DNS-rebinding page cannot talk to the server through a name it controls;
- image ids are looked up in the study's id set before any file is touched, so a path that is
  not exactly a study id (``..``, encoded slashes, ``key.json``) is a 404. Pages are identical
  for real and synthetic images except for the opaque id and the progress count.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from pathlib import Path

from flask import Flask, Response, abort, redirect, render_template, request, url_for

from synthex.vtt import VTTError
from synthex.vtt.store import ANSWERS, MAX_ELAPSED_MS, Answer, AnswerStore
from synthex.vtt.study import check_rater_id, decode_uint16, load_study

_HERE = Path(__file__).parent
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
}
#: names a local server answers to; ``serve`` adds the bound address and ``--allow-host`` names
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def create_app(study_dir: str | Path, lock_answers: bool | None = None, allowed_hosts=None, enrolment: bool = True) -> Flask:
    """The web app for one study; ``lock_answers`` overrides the study's setting when given;
    ``allowed_hosts``: the Host names accepted (default: this machine's local names)."""
    study = load_study(study_dir)
    locked = study.lock_answers if lock_answers is None else lock_answers
    store = AnswerStore(study.answers_path)
    secret = store.secret()
    app = Flask(__name__, template_folder=str(_HERE / "templates"), static_folder=str(_HERE / "static"))
    app.config.update(
        VTT_STUDY=study, VTT_STORE=store, VTT_LOCKED=locked, VTT_ENROLMENT=enrolment,
        TRUSTED_HOSTS=list(allowed_hosts or LOCAL_HOSTS),
    )

    def csrf(context: str) -> str:
        return hmac.new(secret, f"csrf:{context}".encode(), hashlib.sha256).hexdigest()[:32]

    def check_post(context: str) -> None:
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urllib.parse.urlsplit(origin).netloc != request.host:
            abort(403)
        if not hmac.compare_digest(request.form.get("csrf", ""), csrf(context)):
            abort(403)

    def rater_or_404(token: str) -> str:
        rater = store.rater_for_token(token)
        if rater is None:
            abort(404)
        return rater

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

    def start_page(error=None, status=200):
        return render_template(
            "start.html", title=study.title, error=error, paused=request.args.get("paused"),
            enrolment=enrolment, csrf=csrf("start"),
        ), status

    @app.get("/")
    def start():
        return start_page()

    @app.post("/start")
    def start_post():
        check_post("start")
        if not enrolment:
            abort(404)
        try:
            rater = check_rater_id(request.form.get("rater", ""))
            token = store.add_rater(rater)
        except VTTError as e:
            return start_page(str(e), 400)
        return redirect(url_for("next_image", token=token), code=303)

    @app.get("/r/<token>")
    def next_image(token: str):
        rater = rater_or_404(token)
        order, answered = progress(rater)
        remaining = [i for i in order if i not in answered]
        if not remaining:
            return render_template("done.html", title=study.title, rater=rater, token=token, n=len(order),
                                   locked=locked, order=order)
        return _rate_page(rater, token, remaining[0], order, answered)

    @app.get("/r/<token>/<image_id>")
    def image_page(token: str, image_id: str):
        rater = rater_or_404(token)
        image_or_404(image_id)
        order, answered = progress(rater)
        if image_id in answered and locked:
            return message("This answer is submitted and locked.", rater, token, 403)
        return _rate_page(rater, token, image_id, order, answered)

    def message(text: str, rater=None, token=None, status=200):
        return render_template("message.html", title=study.title, message=text, rater=rater, token=token), status

    def _rate_page(rater: str, token: str, image_id: str, order: list[str], answered: set[str]):
        from PIL import Image

        with Image.open(image_or_404(image_id)) as image:
            width, height = image.size
        position = order.index(image_id)
        previous = store.answer_for(rater, image_id) if not locked else None
        return render_template(
            "rate.html",
            title=study.title,
            rater=rater,
            token=token,
            link=url_for("next_image", token=token, _external=True),
            csrf=csrf(token),
            image_id=image_id,
            width=width,
            height=height,
            number=position + 1,
            n=len(order),
            n_answered=len(answered),
            previous=previous,
            back=order[position - 1] if (not locked and position > 0) else None,
        )

    @app.post("/r/<token>/<image_id>")
    def submit(token: str, image_id: str):
        rater = rater_or_404(token)
        image_or_404(image_id)
        check_post(token)
        answer = request.form.get("answer")
        try:
            confidence = int(request.form.get("confidence", ""))
        except ValueError:
            confidence = 0
        if answer not in ANSWERS or confidence not in range(1, 6):
            return message("Choose real or synthetic and a confidence from 1 to 5.", rater, token, 400)
        try:
            elapsed = int(request.form.get("elapsed_ms", ""))
        except ValueError:
            elapsed = None
        if elapsed is not None and not 0 <= elapsed <= MAX_ELAPSED_MS:
            elapsed = None  # not a measurement (clock jump, hand-made request): stored as unknown
        stored = store.record(Answer(rater, image_id, answer, confidence, elapsed), allow_change=not locked)
        first = store.answer_for(rater, image_id) if not stored and locked else None
        if first is not None:  # a repeated submission (back button, second click): say so, keep the first
            return message(
                "You had already answered this image. Answers are locked in this study, so your first answer "
                f"({first.answer}, confidence {first.confidence}) is kept and this one was not recorded.",
                rater, token, 409,
            )
        return redirect(url_for("next_image", token=token), code=303)

    @app.get("/pixels/<image_id>")
    def pixels(image_id: str):
        pixels = decode_uint16(image_or_404(image_id).read_bytes())
        return Response(pixels.astype("<u2").tobytes(), mimetype="application/octet-stream")

    @app.errorhandler(403)
    def forbidden(_error):
        return message("This request was refused (an expired or foreign form). Reload the page and try again.", status=403)

    @app.errorhandler(404)
    def not_found(_error):
        return message("Not found.", status=404)

    @app.errorhandler(405)
    def not_allowed(_error):
        return message("Not found.", status=404)

    return app


def allowed_hosts(host: str, extra=()) -> list[str]:
    """Host names a server bound to ``host`` answers to: the local names, the bound address (unless
    a wildcard), this machine's name when bound beyond localhost, and ``extra`` (``--allow-host``)."""
    import socket

    names = list(LOCAL_HOSTS)
    if host not in ("0.0.0.0", "::", ""):
        names.append(f"[{host}]" if ":" in host else host)
    if host not in LOCAL_HOSTS:
        names += [socket.gethostname(), socket.getfqdn()]
    names += list(extra)
    return list(dict.fromkeys(n for n in names if n))


def serve(
    study_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    lock_answers: bool | None = None,
    announce=print,
    allow_hosts=(),
    enrolment: bool = True,
) -> None:
    """Serve a study with waitress (a production WSGI server) until interrupted."""
    from waitress import create_server

    app = create_app(study_dir, lock_answers, allowed_hosts(host, allow_hosts), enrolment)
    server = create_server(app, host=host, port=port, threads=8, ident="synthex-vtt")
    shown = f"[{host}]" if ":" in host else host
    announce(f"synthex vtt: serving {study_dir} at http://{shown}:{server.effective_port}/ (Ctrl-C to stop)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
