// Where answers come from: the REST API of `digitrecognizer serve`. This is the only file that talks to a server;
// another source (the model running in the browser) can stand in by offering the same three functions.
//
// Every function resolves to the API's JSON, or throws an AnswerError whose `message` is written for people
// (the API's own technical message stays in `detail`).

export class AnswerError extends Error {
  constructor(message, detail = "", code = "") {
    super(message);
    this.name = "AnswerError";
    this.detail = detail;
    this.code = code;
  }
}

// What each API error code means to a person drawing or choosing a photo.
const PEOPLE_MESSAGES = {
  too_large: "That image is too large to read. Try a smaller photo, or crop it to the digit.",
  not_an_image: "That file isn't a picture the model can read: use a PNG, JPEG or WebP image.",
  unsupported_content_type: "That file isn't a picture the model can read: use a PNG, JPEG or WebP image.",
  bad_image: "That image seems damaged and can't be opened. Try another one.",
  bad_base64: "That image seems damaged and can't be opened. Try another one.",
  store_unavailable: "Corrections can't be saved right now. Please try again in a minute.",
};

async function post(path, body, signal) {
  let response;
  try {
    const isForm = body instanceof FormData;
    response = await fetch(path, {
      method: "POST", signal,
      body: isForm ? body : JSON.stringify(body),
      headers: isForm ? {} : { "Content-Type": "application/json" },
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new AnswerError("Can't reach the server. Is `digitrecognizer serve` still running?", String(err), "offline");
  }
  const answer = await response.json().catch(() => ({}));
  if (response.ok) return answer;
  const code = answer.error ? answer.error.code : "";
  const detail = answer.error ? answer.error.message : `HTTP ${response.status}`;
  throw new AnswerError(PEOPLE_MESSAGES[code] || `Something went wrong (the server answered ${response.status}). ` +
                        "Please try again.", detail, code);
}

// `image` is a PNG data URL (a drawing) or a Blob (a photo).
function imageBody(image, fields = {}) {
  if (typeof image === "string") return { image, ...fields };
  const form = new FormData();
  form.append("image", image, image.name || "photo");
  for (const [key, value] of Object.entries(fields)) if (value !== null && value !== undefined) form.append(key, String(value));
  return form;
}

export const serverAnswers = {
  features: { numbers: true, photos: true, corrections: true, pixels: false, note: "" },

  // One digit: {digit, is_digit, blank, confidence, probabilities, novelty, input28}.
  readDigit(image, signal) { return post("/api/predict", imageBody(image), signal); },

  // Several digits side by side: {text, digits: [{digit, is_digit, confidence, box, input28, ...}], input_width, ...}.
  readNumber(image, signal) { return post("/api/read", imageBody(image), signal); },

  // The right digit: {id, kind} ("correction", or "confirmation" when the model was right). `replaces` names
  // a row of the same image sent before, which it changes.
  saveCorrection({ image, predicted, correct, replaces }) {
    return post("/api/feedback", imageBody(image, { predicted, correct, replaces }));
  },

  // The right number for a whole drawing: {id, read_as, digits_stored}.
  saveNumber({ image, number, replaces }) {
    return post("/api/feedback/number", imageBody(image, { number, replaces }));
  },

  async modelInfo() {
    const card = await (await fetch("api/model")).json();
    const test = card.metrics && card.metrics.test;
    return `Model ${card.version}${test ? ` · ${(100 * test.accuracy).toFixed(2)}% on MNIST test` : ""}`;
  },
};
