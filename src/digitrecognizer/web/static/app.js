// DigitRecognizer page: owns the flow between the pad, the source of answers and what is shown.
// - asks for an answer while the pen is down (at most every CADENCE_MS) and at once when it lifts;
//   the newest drawing always wins: an answer to an older drawing never replaces a newer one;
// - the pen-width hint, the two modes (a drawing survives a switch), photos, corrections, keyboard.
// Plain JavaScript modules, no build step. pad.js draws, show.js shows, answers.js talks to the server.
import { answers } from "./source.js";
import { createPad, PAD_SIZES } from "./pad.js";
import { preparePhoto } from "./photo.js";
import { clearBoxes, createView, drawBoxes } from "./show.js";

const CADENCE_MS = 120;       // live answers while drawing: fresh enough to feel instant, few enough requests
const THICK_IN_20PX = 3.6;    // the stroke's width once the drawing is scaled to MNIST's 20 px box: above this,
                              // small writing turns into a blob (MNIST strokes are about 2-3 px)
const THIN_TO_20PX = 2.4;     // the width the "thinner pen" gives those strokes
const HINTS = { digit: "one digit, as large as you like", number: "a number, digits side by side with a gap" };
const EMPTY = { digit: "Draw a digit: the answer appears as you draw.", number: "Write a number, digits side by side." };

const $ = (id) => document.getElementById(id);
const source = answers;  // source.js decides where answers come from: the server, or the browser itself
const pad = createPad($("pad"), $("overlay"));
const view = createView();
const overlay = $("overlay"), result = $("result"), brush = $("brush"), upload = $("upload");
const feedbackStatus = $("feedback-status"), feedbackKeys = $("feedback-keys");

const state = {
  mode: "digit",
  photo: null,           // the photo's Blob to send, while a photo is on the pad
  shown: null,           // {version, answer, image}: the answer on screen and the image it read
  inflight: null,        // {version, controller}: the request on its way
  queued: false,         // a newer drawing waits for the request in flight
  lastAskAt: 0,
  strokeStartAt: 0,
  timer: null,
  correction: null,      // {version, id, digit} or {version, ids, text}: what this drawing's correction stored
  saving: Promise.resolve(),
};

// -------------------------------------------------------------------------------------------------
// Asking while drawing

function hasDrawing() { return state.photo !== null || !pad.isEmpty(); }

function askSoon() {
  if (state.timer) return;
  const since = Math.max(state.lastAskAt, state.strokeStartAt);
  const wait = Math.max(0, since + CADENCE_MS - performance.now());
  state.timer = setTimeout(() => { state.timer = null; askNow(false); }, wait);
}

// `final`: the pen lifted, or the drawing changed at once (undo, photo, mode): an older request is aborted.
function askNow(final) {
  clearTimeout(state.timer);
  state.timer = null;
  const version = pad.version;
  if (state.shown && state.shown.version === version) return;
  if (state.inflight && state.inflight.version === version) return;
  if (state.inflight && !final) { state.queued = true; return; }  // an answer a moment old beats none
  if (state.inflight) state.inflight.controller.abort();
  if (!hasDrawing()) { showNothing(); return; }
  send(version);
}

async function send(version) {
  const controller = new AbortController();
  state.inflight = { version, controller };
  state.queued = false;
  state.lastAskAt = performance.now();
  const image = state.photo || (source.features.pixels ? pad.pixels() : pad.encode());
  const mode = state.mode;
  try {
    const answer = await (mode === "digit" ? source.readDigit(image, controller.signal)
                                           : source.readNumber(image, controller.signal));
    if (isNewest(version) && mode === state.mode) show(version, answer, image);
  } catch (err) {
    if (err.name !== "AbortError" && isNewest(version)) {
      state.shown = { version, answer: null, image };
      result.dataset.answerFor = String(version);
      clearBoxes(overlay);
      view.error(err.message);
    }
  } finally {
    if (state.inflight && state.inflight.controller === controller) state.inflight = null;
    if (state.queued) { state.queued = false; askSoon(); }
  }
}

// Answers arrive out of order when the network hiccups: only one newer than what is shown may replace it.
function isNewest(version) { return !state.shown || version > state.shown.version; }

function show(version, answer, image) {
  state.shown = { version, answer, image };
  result.dataset.answerFor = String(version);
  if (state.mode === "digit") {
    view.digit(answer);
    clearBoxes(overlay);
  } else {
    view.number(answer, touchingWarning(answer));
    drawBoxes(overlay, answer);
  }
  showPenHint();
  updateFeedbackKeys();
}

function showNothing() {
  state.shown = { version: pad.version, answer: null, image: null };
  result.dataset.answerFor = String(pad.version);
  clearBoxes(overlay);
  view.empty(EMPTY[state.mode]);
  showPenHint();
  updateFeedbackKeys();
}

// -------------------------------------------------------------------------------------------------
// The pad's changes

pad.onChange((kind) => {
  if (kind === "screen") {   // the visible canvas was resized, which clears the overlay
    if (state.mode === "number" && state.shown && state.shown.answer) drawBoxes(overlay, state.shown.answer);
    return;
  }
  if (kind !== "photo" && kind !== "reshape") state.photo = null;
  if (kind !== "reshape") forgetCorrection();
  updateFeedbackKeys();   // disabled until this drawing's answer is on screen
  if (kind === "stroke-start") {
    state.strokeStartAt = performance.now();
    return;   // a dot is not worth asking about; the first movement is
  }
  if (kind === "stroke-move") { askSoon(); return; }
  askNow(true);
});

// -------------------------------------------------------------------------------------------------
// Pen width

function penThicknessIn20px() {
  const box = pad.inkBox();
  if (!box || state.photo || state.mode !== "digit") return 0;
  const side = Math.max(box.right - box.left, box.bottom - box.top) + box.pen;
  return (box.pen / side) * 20;
}

function showPenHint() {
  $("pen-hint").hidden = penThicknessIn20px() <= THICK_IN_20PX;
}

$("thinner").addEventListener("click", () => {
  const factor = THIN_TO_20PX / penThicknessIn20px();
  brush.value = String(Math.max(Number(brush.min), Math.round(pad.penWidth * factor)));
  pad.penWidth = Number(brush.value);
  pad.thinStrokes(factor);
});
brush.addEventListener("input", () => { pad.penWidth = Number(brush.value); });
pad.penWidth = Number(brush.value);

// -------------------------------------------------------------------------------------------------
// Number mode: touching marks

// Marks that touch are one stroke to the segmenter: it either leaves them in one box, wider than a single digit
// is tall (two overlapping zeros measure 0.94), or cuts them into boxes that overlap or abut.
const WIDE_DIGIT = 0.9;       // width / height: a single handwritten digit is narrower
const TOUCH_GAP_PX = 2;
function touchingWarning(answer) {
  const boxes = answer.digits.map((d) => d.box).sort((a, b) => a[0] - b[0]);
  const wide = boxes.some(([l, t, r, b]) => r - l > WIDE_DIGIT * (b - t));
  const abutting = boxes.some((a, i) => i > 0 && a[0] - boxes[i - 1][2] <= TOUCH_GAP_PX);
  return wide || abutting ? "Digits may touch or overlap here: leave a gap between them so each gets its own box." : "";
}

// -------------------------------------------------------------------------------------------------
// Corrections: one per drawing. A second choice changes it; choosing the model's own answer confirms it.

function forgetCorrection() {
  state.correction = null;
  feedbackStatus.textContent = "";
  feedbackStatus.classList.remove("error");
  feedbackKeys.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", "false"));
  $("number-fix-input").value = "";
}

function currentAnswer() {
  const shown = state.shown;
  return shown && shown.version === pad.version && shown.answer && !shown.answer.blank ? shown : null;
}

function updateFeedbackKeys() {
  const shown = currentAnswer();
  const modelDigit = shown && state.mode === "digit" && shown.answer.is_digit ? shown.answer.digit : null;
  feedbackKeys.querySelectorAll("button").forEach((b, d) => {
    b.disabled = !shown;
    b.classList.toggle("model-answer", d === modelDigit);
  });
  $("number-fix-input").disabled = $("number-fix-save").disabled = !shown || state.mode !== "number";
}

function say(message, isError = false) {
  feedbackStatus.textContent = message;
  feedbackStatus.classList.toggle("error", isError);
}

// Saves run one after another, so two quick clicks make one correction, changed once.
function queueSave(save) {
  state.saving = state.saving.then(save, save);
}

async function chooseDigit(correct) {
  const shown = currentAnswer();
  if (!shown) return;
  const predicted = shown.answer.is_digit ? shown.answer.digit : null;
  const previous = state.correction && state.correction.version === shown.version ? state.correction : null;
  feedbackKeys.querySelectorAll("button").forEach((b, d) => b.setAttribute("aria-pressed", String(d === correct)));
  if (previous && previous.digit === correct) { say(`Already saved as a ${correct} (#${previous.id}).`); return; }
  say("Saving…");
  try {
    const saved = await source.saveCorrection({ image: shown.image, predicted, correct, replaces: previous && previous.id });
    if (shown.version !== pad.version) return;   // the drawing changed meanwhile: its message would mislead
    state.correction = { version: shown.version, id: saved.id, digit: correct };
    say(saved.kind === "confirmation" ? `Thanks! Saved: it was right, a ${correct} (#${saved.id}).`
        : previous ? `Changed to a ${correct} (#${saved.id}).` : `Thank you! Saved as a ${correct} (#${saved.id}).`);
  } catch (err) {
    say(`Not saved: ${err.message}`, true);
  }
}

// A number is stored whole, with the boxes the model read; the server also keeps each digit on its own when
// the number has as many digits as the marks it found.
async function correctNumber(text) {
  const shown = currentAnswer();
  if (!shown) return;
  if (!/^\d{1,32}$/.test(text)) { say("Type the number with digits only (at most 32).", true); return; }
  const previous = state.correction && state.correction.version === shown.version ? state.correction : null;
  if (previous && previous.text === text) { say(`Already saved as ${text}.`); return; }
  say("Saving…");
  try {
    const saved = await source.saveNumber({ image: shown.image, number: text, replaces: previous && previous.id });
    if (shown.version !== pad.version) return;
    state.correction = { version: shown.version, id: saved.id, text };
    const marks = shown.answer.digits.length;
    say(saved.read_as === text ? `Thanks! Saved: it was right, ${text} (#${saved.id}).`
        : marks !== text.length ? `Saved as ${text} (#${saved.id}). The model found ${marks} mark${marks > 1 ? "s" : ""}: ` +
                                  "leaving a gap between digits helps it."
        : `Thank you! Saved as ${text} (#${saved.id}).`);
  } catch (err) {
    say(`Not saved: ${err.message}`, true);
  }
}

for (let d = 0; d < 10; d++) {
  const key = document.createElement("button");
  key.type = "button";
  key.textContent = String(d);
  key.dataset.testid = `feedback-${d}`;
  key.setAttribute("aria-label", `The right digit is ${d}`);
  key.setAttribute("aria-pressed", "false");
  key.addEventListener("click", () => queueSave(() => chooseDigit(d)));
  feedbackKeys.append(key);
}
$("number-fix").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("number-fix-input").value.trim();
  queueSave(() => correctNumber(text));
});

// -------------------------------------------------------------------------------------------------
// Modes: the drawing is kept, scaled to fit the other pad

function setMode(mode) {
  if (mode === state.mode) return;
  state.mode = mode;
  $("mode-digit").setAttribute("aria-pressed", String(mode === "digit"));
  $("mode-number").setAttribute("aria-pressed", String(mode === "number"));
  document.body.dataset.mode = mode;
  result.dataset.mode = mode;
  $("pad-wrap").classList.toggle("wide", mode === "number");
  $("number-wrap").hidden = mode !== "number";
  $("digit-fix").hidden = mode !== "digit";
  $("number-fix").hidden = mode !== "number";
  $("pad-hint").textContent = HINTS[mode];
  state.shown = null;
  forgetCorrection();
  pad.resize(PAD_SIZES[mode]);
}
$("mode-digit").addEventListener("click", () => setMode("digit"));
$("mode-number").addEventListener("click", () => setMode(state.mode === "number" ? "digit" : "number"));

// -------------------------------------------------------------------------------------------------
// Photos: the Photo button, the hidden file input and drag and drop

async function useFile(file) {
  if (!file) return;
  if (!source.features.photos) { view.error(source.features.note); return; }
  pad.clear();
  const version = pad.version;
  view.busy("Reading the photo…");
  const { bitmap, upload: blob } = await preparePhoto(file);
  if (pad.version !== version) return;   // something was drawn meanwhile: that wins
  state.photo = blob;
  pad.showPhoto(bitmap);
}

$("photo").addEventListener("click", () => upload.click());
upload.addEventListener("change", () => { useFile(upload.files[0]); upload.value = ""; });
const padWrap = $("pad-wrap");
["dragenter", "dragover"].forEach((type) => padWrap.addEventListener(type, (event) => {
  event.preventDefault();
  padWrap.classList.add("dragging");
}));
["dragleave", "drop"].forEach((type) => padWrap.addEventListener(type, () => padWrap.classList.remove("dragging")));
padWrap.addEventListener("drop", (event) => {
  event.preventDefault();
  useFile(event.dataTransfer.files[0]);
});

// -------------------------------------------------------------------------------------------------
// Clear, undo and the keyboard

$("clear").addEventListener("click", () => pad.clear());
$("undo").addEventListener("click", () => pad.undo());
document.addEventListener("keydown", (event) => {
  if (event.target.matches("input[type=text], input:not([type])")) return;   // typing a number keeps its keys
  if (event.key === "Escape") { event.preventDefault(); pad.clear(); }
  if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
    event.preventDefault();
    pad.undo();
  }
});

// -------------------------------------------------------------------------------------------------
// Start

// What this source can't do is hidden, and the page says where to find it.
function offerOnly(features) {
  $("mode-number").closest("[role=group]").hidden = !features.numbers;
  $("photo").hidden = !features.photos;
  $("feedback").hidden = !features.corrections;
  $("source-note").textContent = features.note;
  $("source-note").hidden = !features.note;
  document.querySelectorAll(".server-only").forEach((el) => { el.hidden = !features.corrections; });
}

offerOnly(source.features);
source.modelInfo().then((text) => { $("model-info").textContent = text; })
  .catch(() => { $("model-info").textContent = "Model card unavailable"; });
document.body.dataset.mode = "digit";
showNothing();
