// Visual Turing test viewer: draws a 16-bit grayscale image on a canvas with window/level.
// Pixels come from /pixels/<id> as little-endian uint16, row-major, width x height.
(function () {
  "use strict";
  var canvas = document.getElementById("image");
  if (!canvas) { return; }
  var width = +canvas.dataset.width, height = +canvas.dataset.height;
  var ctx = canvas.getContext("2d");
  var frame = ctx.createImageData(width, height);
  var winInput = document.getElementById("window"), levInput = document.getElementById("level");
  var readout = document.getElementById("wl-readout");
  var pixels = null, shownAt = performance.now();

  function draw() {
    if (!pixels) { return; }
    var w = Math.max(1, +winInput.value), lo = +levInput.value - w / 2, scale = 255 / w;
    var out = frame.data;
    for (var i = 0, j = 0; i < pixels.length; i++, j += 4) {
      var v = (pixels[i] - lo) * scale;
      v = v < 0 ? 0 : (v > 255 ? 255 : v);
      out[j] = out[j + 1] = out[j + 2] = v;
      out[j + 3] = 255;
    }
    ctx.putImageData(frame, 0, 0);
    readout.textContent = "W " + w + " / L " + levInput.value;
    canvas.dataset.drawn = "1";
  }

  function reset() { winInput.value = 65535; levInput.value = 32768; draw(); }

  fetch(canvas.dataset.src, { cache: "no-store" })
    .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.arrayBuffer(); })
    .then(function (buf) { pixels = new Uint16Array(buf); shownAt = performance.now(); draw(); })
    .catch(function (e) { readout.textContent = "image failed to load (" + e.message + ")"; });

  winInput.addEventListener("input", draw);
  levInput.addEventListener("input", draw);
  document.getElementById("reset").addEventListener("click", reset);
  document.getElementById("fit").addEventListener("change", function (e) {
    canvas.classList.toggle("fit", e.target.checked);
  });

  // Drag on the image: horizontal = window width, vertical = level (as in radiology viewers).
  var drag = null;
  canvas.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY, w: +winInput.value, l: +levInput.value };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    winInput.value = Math.max(1, Math.min(65535, drag.w + (e.clientX - drag.x) * 128));
    levInput.value = Math.max(0, Math.min(65535, drag.l - (e.clientY - drag.y) * 128));
    draw();
  });
  canvas.addEventListener("pointerup", function () { drag = null; });

  // Keyboard: r = real, s = synthetic, 1-5 = confidence, Enter = submit.
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var key = e.key.toLowerCase(), target = null;
    if (key === "r") { target = "input[name=answer][value=real]"; }
    else if (key === "s") { target = "input[name=answer][value=synthetic]"; }
    else if ("12345".indexOf(key) >= 0 && key.length === 1) { target = "input[name=confidence][value='" + key + "']"; }
    else if (key === "enter") { e.preventDefault(); if (form.checkValidity()) { form.requestSubmit(); } else { form.reportValidity(); } return; }
    if (target) { document.querySelector(target).checked = true; e.preventDefault(); }
  });

  var form = document.getElementById("answer-form");
  form.addEventListener("submit", function () {
    document.getElementById("elapsed_ms").value = Math.round(performance.now() - shownAt);
    document.getElementById("submit").disabled = true;  // one click, one answer
  });
})();
