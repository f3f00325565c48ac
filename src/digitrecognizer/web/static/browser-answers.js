// Where answers come from in the static site: the shipped model running in this browser with ONNX Runtime Web,
// on the drawing preprocessed here exactly as the server does it (preprocess.js). Nothing leaves the browser.
// It offers the same functions as answers.js; numbers, photos and corrections need the full service.

import * as ort from "./ort/ort.wasm.bundle.min.mjs";
import { AnswerError } from "./answers.js";
import { toMnist } from "./preprocess.js";

ort.env.wasm.numThreads = 1;   // threads need cross-origin isolation, which static hosts rarely offer
ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;

const FULL_SERVICE = "Numbers, photos and corrections need the full service (digitrecognizer serve): " +
                     "this page reads one digit at a time, in your browser.";

// Loaded once, when the page opens: after that the page needs no server at all.
const ready = (async () => {
  try {
    const card = await (await fetch("./model/card.json")).json();
    const session = await ort.InferenceSession.create("./model/model.onnx", { executionProviders: ["wasm"] });
    return { card, session };
  } catch (err) {
    throw new AnswerError("The model couldn't start in this browser. Try reloading the page, or another browser.",
                          String(err), "model_unavailable");
  }
})();

async function pixelsOf(image) {
  const bitmap = await createImageBitmap(await (await fetch(image)).blob());
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
}

function softmax(logits, temperature) {
  const z = Array.from(logits, (v) => v / temperature);
  const top = Math.max(...z);
  const e = z.map((v) => Math.exp(v - top));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

// The card's rule (card.NotDigit.accepts): confident, near the digits seen in training, not called a non-digit.
function accepts(rule, confidence, novelty, notDigit) {
  const maxNovelty = rule.max_novelty === null ? Infinity : rule.max_novelty;
  return confidence >= rule.min_confidence && novelty <= maxNovelty && notDigit <= rule.max_not_digit;
}

function previewUrl(input28) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 28;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  input28.forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
  ctx.putImageData(image, 0, 0);
  return canvas.toDataURL("image/png");
}

const BLANK = { digit: null, probabilities: Array(10).fill(0.1), confidence: 0, is_digit: false, blank: true,
                novelty: 0, not_digit: 0, box: null, input28: null };

// The answer for a 28x28 input, in the API's shape (the fields of `/api/predict`).
export async function answerFor(input28) {
  const { card, session } = await ready;
  const x = new ort.Tensor("float32", Float32Array.from(input28, (v) => v / 255), [1, 1, 28, 28]);
  const outputs = await session.run({ [session.inputNames[0]]: x });
  const [logits, novelty, notDigit] = session.outputNames.map((name) => outputs[name].data);
  const probabilities = softmax(logits, card.temperature);
  const confidence = Math.max(...probabilities);
  const isDigit = accepts(card.not_digit, confidence, novelty ? novelty[0] : 0, notDigit ? notDigit[0] : 0);
  return { digit: isDigit ? probabilities.indexOf(confidence) : null, probabilities, confidence, is_digit: isDigit,
           blank: false, novelty: novelty ? novelty[0] : 0, not_digit: notDigit ? notDigit[0] : 0, box: null,
           input28: previewUrl(input28) };
}

export const browserAnswers = {
  // `pixels`: the page hands over the pad's ImageData instead of a PNG.
  features: { numbers: false, photos: false, corrections: false, pixels: true, note: FULL_SERVICE },

  // `image`: the pad's ImageData, or a PNG data URL.
  async readDigit(image) {
    if (image instanceof Blob) throw new AnswerError(FULL_SERVICE, "", "static_site");   // a photo
    const input28 = toMnist(typeof image === "string" ? await pixelsOf(image) : image);
    return input28 === null ? { ...BLANK } : answerFor(input28);
  },

  async readNumber() { throw new AnswerError(FULL_SERVICE, "", "static_site"); },
  async saveCorrection() { throw new AnswerError(FULL_SERVICE, "", "static_site"); },
  async saveNumber() { throw new AnswerError(FULL_SERVICE, "", "static_site"); },

  async modelInfo() {
    const { card } = await ready;
    const test = card.metrics && card.metrics.test;
    return `Model ${card.version}${test ? ` · ${(100 * test.accuracy).toFixed(2)}% on MNIST test` : ""} · ` +
           "running in your browser";
  },
};
