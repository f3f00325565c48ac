// Showing answers: the headline, the ten bars, what the model saw, and a number's boxes on the pad.
// One visual language for every state, named on the result panel's data-state:
//   empty     nothing drawn yet
//   sure      a digit, green
//   unsure    "5 or 8?": the top two, amber, when the model is less than UNSURE_BELOW sure
//   not-digit the drawing was refused: no digit, bars grey, nothing highlighted
//   busy      a photo is on its way
//   error     a message for people, pink
// The headline and the bars print percentages with the same function, so they always agree.
// Everything from the server goes through textContent, never innerHTML.

export const UNSURE_BELOW = 0.8;
const $ = (id) => document.getElementById(id);

export function percent(p) {
  if (p >= 0.9995) return ">99.9%";
  if (p < 0.0005) return "0%";
  return `${(100 * p).toFixed(1)}%`;
}

export function createView() {
  const result = $("result"), digitEl = $("prediction"), confidenceEl = $("confidence");
  const stateText = $("state-text"), barsEl = $("bars"), preview = $("preview");
  const numberEl = $("number"), piecesEl = $("pieces"), numberNote = $("number-note");
  const BLANK_PREVIEW = preview.getAttribute("src");   // the page's 1x1 black image: the model's empty input
  const bars = buildBars(barsEl);

  function setState(name, message = "") {
    result.dataset.state = name;
    stateText.textContent = message;
  }

  function showBars(probabilities, lead) {
    bars.forEach((li, d) => {
      const p = probabilities ? probabilities[d] : 0;
      li.querySelector(".bar-fill").style.transform = `scaleX(${p})`;
      li.querySelector(".bar-value").textContent = percent(p);
      li.setAttribute("aria-label", `${d}: ${percent(p)}`);
      li.classList.toggle("lead", d === lead);
    });
  }

  function clearAnswer() {
    digitEl.textContent = "";
    confidenceEl.textContent = "";
    numberEl.textContent = "";
    numberNote.textContent = "";
    piecesEl.replaceChildren();
    preview.src = BLANK_PREVIEW;
    showBars(null, -1);
  }

  return {
    empty(message) {
      clearAnswer();
      setState("empty", message);
    },

    busy(message) { setState("busy", message); },

    error(message) {
      clearAnswer();
      setState("error", message);
    },

    digit(answer) {
      if (answer.blank) { this.empty("Nothing to read yet: draw a digit."); return; }
      preview.src = answer.input28 || BLANK_PREVIEW;
      const ranked = answer.probabilities.map((p, d) => [p, d]).sort((a, b) => b[0] - a[0]);
      if (!answer.is_digit) {
        digitEl.textContent = "?";
        confidenceEl.textContent = "";
        showBars(answer.probabilities, -1);
        setState("not-digit", "That doesn't look like a digit. Try again, or tell us what it is.");
        return;
      }
      digitEl.textContent = String(answer.digit);
      showBars(answer.probabilities, answer.digit);
      if (answer.confidence < UNSURE_BELOW) {
        const second = ranked[1][1];
        confidenceEl.textContent = `${answer.digit} or ${second}? Only ${percent(answer.confidence)} sure`;
        setState("unsure", "Not sure: write it a little clearer, or tell us which.");
      } else {
        confidenceEl.textContent = `${percent(answer.confidence)} sure`;
        setState("sure");
      }
    },

    number(answer, warning) {
      clearAnswer();
      if (!answer.digits.length) { this.empty("Nothing to read yet: write a number."); return; }
      numberEl.textContent = answer.digits.map((d) => (d.is_digit ? String(d.digit) : "?")).join("");
      piecesEl.replaceChildren(...answer.digits.map(pieceItem));
      const refused = answer.digits.filter((d) => !d.is_digit).length;
      const unsure = answer.digits.filter((d) => d.is_digit && d.confidence < UNSURE_BELOW).length;
      numberNote.textContent = warning;
      if (refused) {
        setState("not-digit", `${refused} mark${refused > 1 ? "s" : ""} (?) did not look like a digit.`);
      } else if (unsure) {
        setState("unsure", `Not sure of ${unsure} digit${unsure > 1 ? "s" : ""}: the amber box${unsure > 1 ? "es" : ""}.`);
      } else {
        setState("sure");
      }
      const mean = answer.digits.reduce((s, d) => s + d.confidence, 0) / answer.digits.length;
      confidenceEl.textContent = refused ? "" : `${answer.digits.length} digit${answer.digits.length > 1 ? "s" : ""}, ` +
        `${percent(mean)} sure on average`;
    },
  };
}

function buildBars(barsEl) {
  const bars = [];
  for (let d = 0; d < 10; d++) {
    const li = document.createElement("li");
    li.className = "bar";
    for (const part of ["bar-label", "bar-track", "bar-value"]) {
      const span = document.createElement("span");
      span.className = part;
      li.append(span);
    }
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    li.querySelector(".bar-track").append(fill);
    li.querySelector(".bar-label").textContent = String(d);
    li.querySelector(".bar-value").textContent = "0%";
    li.setAttribute("aria-label", `${d}: 0%`);
    barsEl.append(li);
    bars.push(li);
  }
  return bars;
}

// Each digit of a number as the model saw it, with what it read and how sure it is.
function pieceItem(d) {
  const li = document.createElement("li");
  const img = document.createElement("img");
  img.src = d.input28 || "";
  img.alt = d.is_digit ? `read as ${d.digit}` : "not a digit";
  img.width = img.height = 56;
  const caption = document.createElement("span");
  caption.textContent = d.is_digit ? `${d.digit} · ${percent(d.confidence)}` : "?";
  li.append(img, caption);
  li.classList.toggle("refused", !d.is_digit);
  li.classList.toggle("unsure", d.is_digit && d.confidence < UNSURE_BELOW);
  return li;
}

// --- A number's boxes, drawn on the overlay canvas over the pad --------------------------------------

const BOX_COLOURS = { sure: "#39ff88", unsure: "#ffc857", refused: "#ffc857" };

// Where an image of width x height lands when drawn contained and centred in a width x height area.
export function containMap(width, height, areaWidth, areaHeight) {
  const scale = Math.min(areaWidth / width, areaHeight / height);
  return { scale, dx: (areaWidth - width * scale) / 2, dy: (areaHeight - height * scale) / 2 };
}

// Labels go above their box, else below, else stacked further up: never over another label.
export function drawBoxes(overlay, answer) {
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  if (!answer) return [];
  const { scale, dx, dy } = containMap(answer.input_width, answer.input_height, overlay.width, overlay.height);
  const fontPx = Math.round(15 * (window.devicePixelRatio || 1));
  ctx.font = `bold ${fontPx}px system-ui, sans-serif`;
  ctx.lineWidth = 2 * (window.devicePixelRatio || 1);
  const placed = [];
  for (const d of answer.digits) {
    const [l, r] = [d.box[0], d.box[2]].map((v) => dx + v * scale);
    const [t, b] = [d.box[1], d.box[3]].map((v) => dy + v * scale);
    const pad = 4 * (window.devicePixelRatio || 1);
    const box = { x: l - pad, y: t - pad, w: r - l + 2 * pad, h: b - t + 2 * pad };
    const kind = !d.is_digit ? "refused" : d.confidence < UNSURE_BELOW ? "unsure" : "sure";
    const colour = BOX_COLOURS[kind];
    ctx.strokeStyle = colour;
    ctx.shadowColor = colour;
    ctx.shadowBlur = 8;
    ctx.strokeRect(box.x, box.y, box.w, box.h);
    ctx.shadowBlur = 0;
    const text = d.is_digit ? `${d.digit} ${percent(d.confidence)}` : "?";
    const label = placeLabel(box, ctx.measureText(text).width + pad * 2, fontPx + pad, placed, overlay);
    placed.push(label);
    ctx.fillStyle = "rgba(7,10,18,.85)";
    ctx.fillRect(label.x, label.y, label.w, label.h);
    ctx.fillStyle = colour;
    ctx.fillText(text, label.x + pad, label.y + label.h - pad * 0.9);
  }
  overlay.dataset.labels = JSON.stringify(placed.map((p) => [p.x, p.y, p.w, p.h].map(Math.round)));
  return placed;
}

function placeLabel(box, w, h, placed, overlay) {
  const x = Math.min(Math.max(0, box.x), overlay.width - w);
  const candidates = [box.y - h - 2, box.y + box.h + 2];
  for (let k = 1; k < 6; k++) candidates.push(box.y - (k + 1) * (h + 2), box.y + box.h + 2 + k * (h + 2));
  const fits = (y) => y >= 0 && y + h <= overlay.height;
  const free = (y) => !placed.some((p) => x < p.x + p.w && p.x < x + w && y < p.y + p.h && p.y < y + h);
  const y = candidates.find((c) => fits(c) && free(c)) ?? candidates.find(free) ?? Math.max(0, box.y);
  return { x, y, w, h };
}

export function clearBoxes(overlay) {
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  delete overlay.dataset.labels;
}
