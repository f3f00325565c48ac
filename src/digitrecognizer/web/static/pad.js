// The drawing pad: strokes from a mouse, a finger or a pen, kept in the model's own pixels, shown on screen and
// encoded as the PNG the model reads. It knows nothing about answers; the page listens to its "ink" events.
//
// Two canvases: a fixed-size one the model reads (280x280 for a digit, 640x240 for a number, white on black
// like MNIST) and the visible one, sized to the screen's pixels so lines stay sharp at any size and zoom.
// Strokes live in the model's pixels, so the pen width is a share of the pad on every screen.

export const PAD_SIZES = { digit: [280, 280], number: [640, 240] };
const INK = "#ffffff";
const PAPER = "#000000";

export function createPad(visible, overlay) {
  const model = document.createElement("canvas");
  [model.width, model.height] = PAD_SIZES.digit;
  const mctx = model.getContext("2d", { willReadFrequently: true });
  const vctx = visible.getContext("2d");
  const listeners = new Set();
  const pad = {
    strokes: [],        // each stroke: {width, points: [[x, y], ...]} in model pixels
    current: null,      // the stroke under the pen, while it is down
    photo: null,        // an ImageBitmap shown instead of strokes
    version: 0,         // bumps on every change of ink: answers name the version they read
    width: PAD_SIZES.digit[0],
    height: PAD_SIZES.digit[1],
  };

  function changed(kind) {
    pad.version++;
    visible.dataset.inkVersion = String(pad.version);
    listeners.forEach((listener) => listener(kind));
  }

  // --- Rendering --------------------------------------------------------------------------------

  function paint(ctx) {
    ctx.fillStyle = PAPER;
    ctx.fillRect(0, 0, pad.width, pad.height);
    if (pad.photo) drawContained(ctx, pad.photo, pad.width, pad.height);
    pad.strokes.forEach((stroke) => drawStroke(ctx, stroke));
    if (pad.current) drawStroke(ctx, pad.current);
  }

  function render() {
    paint(mctx);
    vctx.setTransform(visible.width / pad.width, 0, 0, visible.height / pad.height, 0, 0);
    paint(vctx);
  }

  // The visible canvas follows its box on screen, in device pixels.
  function fitToScreen() {
    const rect = visible.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(rect.width * ratio)), h = Math.max(1, Math.round(rect.height * ratio));
    if (visible.width !== w || visible.height !== h) {
      visible.width = overlay.width = w;
      visible.height = overlay.height = h;
      render();
      listeners.forEach((listener) => listener("screen"));
    }
  }
  new ResizeObserver(fitToScreen).observe(visible);

  // --- Pointer input ----------------------------------------------------------------------------

  function toModel(event) {
    const rect = visible.getBoundingClientRect();
    return [(event.clientX - rect.left) * (pad.width / rect.width),
            (event.clientY - rect.top) * (pad.height / rect.height)];
  }

  visible.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.pointerType === "mouse") return;
    event.preventDefault();
    visible.setPointerCapture(event.pointerId);
    if (pad.photo) { pad.photo = null; pad.strokes = []; }
    // Pen pressure, when there is any, thickens the line a little.
    const pressure = event.pointerType === "pen" && event.pressure ? 0.6 + event.pressure * 0.8 : 1;
    pad.current = { width: pad.penWidth * pressure, points: [toModel(event)] };
    render();
    changed("stroke-start");
  });

  visible.addEventListener("pointermove", (event) => {
    if (!pad.current) return;
    event.preventDefault();
    const samples = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const sample of samples.length ? samples : [event]) pad.current.points.push(toModel(sample));
    render();
    changed("stroke-move");
  });

  function endStroke(event) {
    if (!pad.current) return;
    if (visible.hasPointerCapture(event.pointerId)) visible.releasePointerCapture(event.pointerId);
    pad.strokes.push(pad.current);
    pad.current = null;
    render();
    changed("stroke-end");
  }
  visible.addEventListener("pointerup", endStroke);
  visible.addEventListener("pointercancel", endStroke);

  // --- What the page asks of the pad ------------------------------------------------------------

  Object.assign(pad, {
    penWidth: 22,
    onChange(listener) { listeners.add(listener); },
    isDrawing() { return pad.current !== null; },
    isEmpty() { return !pad.strokes.length && !pad.current && !pad.photo; },

    clear() {
      pad.strokes = [];
      pad.current = null;
      pad.photo = null;
      render();
      changed("clear");
    },

    undo() {
      if (pad.photo) { pad.clear(); return; }
      pad.strokes.pop();
      render();
      changed("undo");
    },

    showPhoto(bitmap) {
      pad.strokes = [];
      pad.current = null;
      pad.photo = bitmap;
      render();
      changed("photo");
    },

    // A new shape for the pad (digit or number) that keeps the drawing: scaled to fit and centred.
    resize([width, height]) {
      const box = inkBox(pad.strokes);
      const oldW = pad.width, oldH = pad.height;
      pad.width = model.width = width;
      pad.height = model.height = height;
      if (box) {
        const scale = Math.min(1, width / oldW, height / oldH);
        const dx = width / 2 - scale * (box.left + box.right) / 2;
        const dy = height / 2 - scale * (box.top + box.bottom) / 2;
        pad.strokes = pad.strokes.map((s) => ({
          width: s.width * scale,
          points: s.points.map(([x, y]) => [dx + scale * x, dy + scale * y]),
        }));
      }
      render();
      changed("reshape");
    },

    // Every stroke drawn again at `factor` times its width (the pen-width hint's "thinner pen").
    thinStrokes(factor) {
      pad.strokes = pad.strokes.map((s) => ({ ...s, width: s.width * factor }));
      render();
      changed("thin");
    },

    // The drawing's extent and its pen, in model pixels: how thick the strokes will look once scaled to 20 px.
    inkBox() { return inkBox(pad.current ? [...pad.strokes, pad.current] : pad.strokes); },

    // PNG as a data URL, encoded at once: canvas.toBlob waits for an idle moment, which after touch input
    // comes about a second later in Chromium; toDataURL of 280x280 pixels takes a few milliseconds.
    encode() { return model.toDataURL("image/png"); },

    // The drawing's pixels as they are (RGBA), for a source that reads them in this page: no PNG round trip.
    pixels() { return mctx.getImageData(0, 0, model.width, model.height); },
  });

  fitToScreen();
  render();
  return pad;
}

function drawContained(ctx, bitmap, width, height) {
  const scale = Math.min(width / bitmap.width, height / bitmap.height);
  const w = bitmap.width * scale, h = bitmap.height * scale;
  ctx.drawImage(bitmap, (width - w) / 2, (height - h) / 2, w, h);
}

function drawStroke(ctx, stroke) {
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

function inkBox(strokes) {
  if (!strokes.length) return null;
  let left = Infinity, top = Infinity, right = -Infinity, bottom = -Infinity, pen = 0;
  for (const s of strokes) {
    pen = Math.max(pen, s.width);
    for (const [x, y] of s.points) {
      left = Math.min(left, x); right = Math.max(right, x);
      top = Math.min(top, y); bottom = Math.max(bottom, y);
    }
  }
  return { left, top, right, bottom, pen };
}
