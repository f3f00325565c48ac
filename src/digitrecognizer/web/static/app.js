// DigitRecognizer page: a drawing pad that asks the API what it reads while you draw.
// Plain JavaScript, no build step. Everything shown from the server goes through textContent, never innerHTML.
"use strict";

(() => {
  const DEBOUNCE_MS = 80;          // after the last stroke movement: an answer within ~100 ms, no request flood
  const PAD_SIZES = { digit: [280, 280], number: [640, 240] };
  const INK = "#ffffff";
  const PAPER = "#000000";         // white on black, like MNIST; the PNG is opaque so the server sees a real image

  const $ = (id) => document.getElementById(id);
  const pad = $("pad"), overlay = $("overlay"), padWrap = $("pad-wrap");
  const ctx = pad.getContext("2d"), octx = overlay.getContext("2d");
  const result = $("result"), predictionEl = $("prediction"), confidenceEl = $("confidence");
  const stateText = $("state-text"), barsEl = $("bars"), preview = $("preview");
  const BLANK_PREVIEW = preview.getAttribute("src");  // the page's 1x1 black image: the model's empty input
  const numberWrap = $("number-wrap"), numberEl = $("number"), piecesEl = $("pieces");
  const feedbackStatus = $("feedback-status"), feedbackKeys = $("feedback-keys");
  const brush = $("brush"), upload = $("upload");

  const state = {
    mode: "digit",
    strokes: [],          // each stroke: {width, points: [[x, y], ...]} in canvas pixels
    current: null,
    uploaded: null,       // an uploaded image (Blob) shown on the pad instead of strokes
    uploadedBitmap: null,
    timer: null,
    inflight: null,       // AbortController of the request in flight
    lastSent: null,       // the Blob of the last drawing sent (feedback sends the same image)
    lastDigit: null,
    generation: 0,        // bumps on every change: answers to older drawings are dropped
  };

  // ---------------------------------------------------------------------------------------------
  // Bars and feedback keys

  const bars = [];
  for (let d = 0; d < 10; d++) {
    const li = document.createElement("li");
    li.className = "bar";
    li.innerHTML = '<span class="bar-label"></span><span class="bar-track"><span class="bar-fill"></span></span><span class="bar-value"></span>';
    li.querySelector(".bar-label").textContent = String(d);
    li.querySelector(".bar-value").textContent = "0%";
    li.setAttribute("aria-label", `${d}: 0 percent`);
    barsEl.appendChild(li);
    bars.push(li);

    const key = document.createElement("button");
    key.type = "button";
    key.textContent = String(d);
    key.dataset.testid = `feedback-${d}`;
    key.setAttribute("aria-label", `The right digit is ${d}`);
    key.addEventListener("click", () => sendFeedback(d));
    feedbackKeys.appendChild(key);
  }

  function showBars(probabilities) {
    const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
    bars.forEach((li, d) => {
      const p = probabilities ? probabilities[d] : 0;
      li.querySelector(".bar-fill").style.transform = `scaleX(${p})`;
      const pct = p >= 0.995 ? "100%" : p < 0.001 ? "0%" : `${(100 * p).toFixed(p < 0.1 ? 1 : 0)}%`;
      li.querySelector(".bar-value").textContent = pct;
      li.setAttribute("aria-label", `${d}: ${pct}`);
      li.classList.toggle("lead", d === top && p > 0);
    });
  }

  function setFeedbackEnabled(enabled) {
    feedbackKeys.querySelectorAll("button").forEach((b) => { b.disabled = !enabled; });
  }

  // ---------------------------------------------------------------------------------------------
  // Showing answers

  function setState(name, message) {
    result.dataset.state = name;
    if (message !== undefined) stateText.textContent = message;
  }

  function showEmpty() {
    predictionEl.textContent = "";
    confidenceEl.textContent = "";
    numberEl.textContent = "";
    piecesEl.replaceChildren();
    showBars(null);
    preview.src = BLANK_PREVIEW;
    clearOverlay();
    setFeedbackEnabled(false);
    setState("empty", state.mode === "digit" ? "Draw a digit: the answer appears as you draw."
                                              : "Write a number, digits side by side.");
  }

  function showDigit(answer) {
    state.lastDigit = answer.digit;
    preview.src = answer.input28 || BLANK_PREVIEW;
    showBars(answer.blank ? null : answer.probabilities);
    if (answer.blank) { showEmpty(); return; }
    setFeedbackEnabled(true);
    if (answer.is_digit) {
      predictionEl.textContent = String(answer.digit);
      confidenceEl.textContent = `${(100 * answer.confidence).toFixed(1)}% sure`;
      setState("digit", "");
    } else {
      predictionEl.textContent = "";
      confidenceEl.textContent = "";
      setState("not-digit", "That doesn't look like a digit. Try again, or tell us what it is.");
    }
  }

  function showNumber(answer) {
    numberEl.textContent = answer.text;
    predictionEl.textContent = "";
    confidenceEl.textContent = "";
    setFeedbackEnabled(false);
    drawBoxes(answer);
    // Each digit as the model saw it, with what it read and how sure it is.
    piecesEl.replaceChildren(...answer.digits.map((d) => {
      const li = document.createElement("li");
      const img = document.createElement("img");
      img.src = d.input28 || BLANK_PREVIEW;
      img.alt = d.is_digit ? `read as ${d.digit}` : "not a digit";
      img.width = img.height = 56;
      const caption = document.createElement("span");
      caption.textContent = `${d.is_digit ? d.digit : "?"} · ${(100 * d.confidence).toFixed(0)}%`;
      li.append(img, caption);
      li.classList.toggle("unsure", !d.is_digit);
      return li;
    }));
    if (!answer.digits.length) { showEmpty(); return; }
    const unsure = answer.digits.filter((d) => !d.is_digit).length;
    setState(unsure ? "not-digit" : "digit",
             unsure ? `${unsure} mark${unsure > 1 ? "s" : ""} (?) did not look like a digit.` : "");
    if (!unsure) {
      const mean = answer.digits.reduce((s, d) => s + d.confidence, 0) / answer.digits.length;
      confidenceEl.textContent = `${answer.digits.length} digit${answer.digits.length > 1 ? "s" : ""}, ` +
        `${(100 * mean).toFixed(0)}% sure on average`;
    }
  }

  function clearOverlay() { octx.clearRect(0, 0, overlay.width, overlay.height); }

  function drawBoxes(answer) {
    clearOverlay();
    const sx = overlay.width / answer.input_width, sy = overlay.height / answer.input_height;
    octx.lineWidth = 2;
    octx.font = "bold 15px system-ui, sans-serif";
    for (const d of answer.digits) {
      const [l, t, r, b] = d.box;
      const x = l * sx - 4, y = t * sy - 4, w = (r - l) * sx + 8, h = (b - t) * sy + 8;
      const colour = d.is_digit ? "#39ff88" : "#ffc857";
      octx.strokeStyle = colour;
      octx.shadowColor = colour;
      octx.shadowBlur = 8;
      octx.strokeRect(x, y, w, h);
      octx.shadowBlur = 0;
      const label = `${d.is_digit ? d.digit : "?"} ${(100 * d.confidence).toFixed(0)}%`;
      const labelY = y > 22 ? y - 6 : y + h + 16;
      octx.fillStyle = "rgba(7,10,18,.85)";
      octx.fillRect(x, labelY - 14, octx.measureText(label).width + 8, 19);
      octx.fillStyle = colour;
      octx.fillText(label, x + 4, labelY);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Talking to the API

  function canvasBlob() {
    return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  }

  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(ask, delay);
  }

  async function ask() {
    const generation = ++state.generation;
    if (!state.strokes.length && !state.uploaded) { showEmpty(); return; }
    const blob = state.uploaded || await canvasBlob();
    if (generation !== state.generation) return;
    if (state.inflight) state.inflight.abort();   // the newest drawing wins
    const controller = new AbortController();
    state.inflight = controller;
    state.lastSent = blob;
    setState("loading");
    const form = new FormData();
    form.append("image", blob, state.uploaded ? (state.uploaded.name || "upload") : "drawing.png");
    try {
      const response = await fetch(state.mode === "digit" ? "/api/predict" : "/api/read",
                                   { method: "POST", body: form, signal: controller.signal });
      const answer = await response.json();
      if (generation !== state.generation) return;
      if (!response.ok) {
        showBars(null);
        predictionEl.textContent = "";
        setState("error", answer.error ? answer.error.message : `The server answered ${response.status}.`);
        return;
      }
      if (state.mode === "digit") showDigit(answer); else showNumber(answer);
    } catch (err) {
      if (err.name !== "AbortError" && generation === state.generation) {
        setState("error", "Cannot reach the server. Is `digitrecognizer serve` running?");
      }
    } finally {
      if (state.inflight === controller) state.inflight = null;
    }
  }

  async function sendFeedback(correct) {
    if (!state.lastSent) return;
    const form = new FormData();
    form.append("image", state.lastSent, "drawing.png");
    form.append("correct", String(correct));
    if (state.lastDigit !== null && state.lastDigit !== undefined) form.append("predicted", String(state.lastDigit));
    feedbackStatus.classList.remove("error");
    feedbackStatus.textContent = "Sending…";
    try {
      const response = await fetch("/api/feedback", { method: "POST", body: form });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error ? answer.error.message : `status ${response.status}`);
      feedbackStatus.textContent = `Thank you! Saved as a ${correct} (correction #${answer.id}).`;
    } catch (err) {
      feedbackStatus.classList.add("error");
      feedbackStatus.textContent = `Not saved: ${err.message}`;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Drawing

  function paper() {
    ctx.fillStyle = PAPER;
    ctx.fillRect(0, 0, pad.width, pad.height);
    if (state.uploadedBitmap) {
      const bmp = state.uploadedBitmap;
      const scale = Math.min(pad.width / bmp.width, pad.height / bmp.height);
      const w = bmp.width * scale, h = bmp.height * scale;
      ctx.drawImage(bmp, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    }
  }

  function drawStroke(stroke) {
    const pts = stroke.points;
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    ctx.lineWidth = stroke.width;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (pts.length === 1) {
      ctx.beginPath();
      ctx.arc(pts[0][0], pts[0][1], stroke.width / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    // Quadratic curves through the midpoints: smooth lines from sparse pointer samples.
    ctx.beginPath();
    ctx.moveTo(pts[0][0], pts[0][1]);
    for (let i = 1; i < pts.length - 1; i++) {
      const mx = (pts[i][0] + pts[i + 1][0]) / 2, my = (pts[i][1] + pts[i + 1][1]) / 2;
      ctx.quadraticCurveTo(pts[i][0], pts[i][1], mx, my);
    }
    const last = pts[pts.length - 1];
    ctx.lineTo(last[0], last[1]);
    ctx.stroke();
  }

  function redraw() {
    paper();
    state.strokes.forEach(drawStroke);
    if (state.current) drawStroke(state.current);
  }

  function point(event) {
    const rect = pad.getBoundingClientRect();
    return [(event.clientX - rect.left) * (pad.width / rect.width),
            (event.clientY - rect.top) * (pad.height / rect.height)];
  }

  pad.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.pointerType === "mouse") return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    if (state.uploaded) { state.uploaded = null; state.uploadedBitmap = null; state.strokes = []; }
    // Pen pressure, when there is any, thickens the line a little.
    const width = Number(brush.value) * (event.pressure && event.pointerType === "pen" ? 0.6 + event.pressure * 0.8 : 1);
    state.current = { width, points: [point(event)] };
    clearTimeout(state.timer);
    redraw();
  });

  pad.addEventListener("pointermove", (event) => {
    if (!state.current) return;
    event.preventDefault();
    const samples = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const sample of samples.length ? samples : [event]) state.current.points.push(point(sample));
    redraw();
    schedule(DEBOUNCE_MS);   // answers while drawing, once the hand pauses
  });

  function endStroke(event) {
    if (!state.current) return;
    if (event && pad.hasPointerCapture(event.pointerId)) pad.releasePointerCapture(event.pointerId);
    state.strokes.push(state.current);
    state.current = null;
    redraw();
    schedule(0);
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function clearPad() {
    state.strokes = [];
    state.current = null;
    state.uploaded = null;
    state.uploadedBitmap = null;
    state.lastSent = null;
    state.generation++;
    if (state.inflight) state.inflight.abort();
    clearTimeout(state.timer);
    feedbackStatus.textContent = "";
    redraw();
    showEmpty();
  }

  function undo() {
    if (state.uploaded) { clearPad(); return; }
    state.strokes.pop();
    redraw();
    clearOverlay();
    schedule(0);
  }

  $("clear").addEventListener("click", clearPad);
  $("undo").addEventListener("click", undo);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { event.preventDefault(); clearPad(); }
    if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undo();
    }
  });

  // ---------------------------------------------------------------------------------------------
  // Modes

  function setMode(mode) {
    state.mode = mode;
    $("mode-digit").setAttribute("aria-pressed", String(mode === "digit"));
    $("mode-number").setAttribute("aria-pressed", String(mode === "number"));
    const [w, h] = PAD_SIZES[mode];
    pad.width = overlay.width = w;
    pad.height = overlay.height = h;
    padWrap.classList.toggle("wide", mode === "number");
    numberWrap.hidden = mode !== "number";
    result.dataset.mode = mode;
    $("pad-hint").textContent = mode === "digit" ? "one digit, as large as you like" : "a number, digits side by side";
    $("feedback").hidden = mode !== "digit";
    clearPad();
  }
  $("mode-digit").addEventListener("click", () => setMode("digit"));
  $("mode-number").addEventListener("click", () => setMode(state.mode === "number" ? "digit" : "number"));

  // ---------------------------------------------------------------------------------------------
  // Photos: the file input and drag and drop

  async function useFile(file) {
    if (!file) return;
    clearPad();
    state.uploaded = file;
    try {
      state.uploadedBitmap = await createImageBitmap(file);
    } catch (err) {
      state.uploadedBitmap = null;  // the server explains what is wrong with it
    }
    redraw();
    ask();
  }
  upload.addEventListener("change", () => { useFile(upload.files[0]); upload.value = ""; });
  ["dragenter", "dragover"].forEach((type) => padWrap.addEventListener(type, (event) => {
    event.preventDefault();
    padWrap.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => padWrap.addEventListener(type, () => padWrap.classList.remove("dragging")));
  padWrap.addEventListener("drop", (event) => {
    event.preventDefault();
    useFile(event.dataTransfer.files[0]);
  });

  // ---------------------------------------------------------------------------------------------
  // Start

  fetch("/api/model").then((r) => r.json()).then((card) => {
    const acc = card.metrics && card.metrics.test ? `${(100 * card.metrics.test.accuracy).toFixed(2)}% on MNIST test` : "";
    $("model-info").textContent = `Model ${card.version}${acc ? " · " + acc : ""}`;
  }).catch(() => { $("model-info").textContent = "Model card unavailable"; });

  redraw();
  showEmpty();
})();
