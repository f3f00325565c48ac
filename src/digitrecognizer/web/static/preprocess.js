// Preprocessing in the browser: a drawing's RGBA pixels -> the model's 28x28 input, the same bytes the server's
// digitrecognizer.preprocess.to_mnist makes of them, so a static copy of the page can run the model itself.
//
// Each step mirrors its Python original (named in its comment) down to the arithmetic, because the model's
// input is bytes and a threshold met on one side and missed on the other changes them: NumPy's float32 passes
// are float32 here too (Math.fround after each operation, or a Float32Array store), Python's round and np.round
// round halves to even, sums are added in NumPy's order, and resizing is Pillow's own resampling.
// An image is a plane: {data, width, height}, row-major. A box is {top, bottom, left, right}, ends excluded.

const f32 = Math.fround;
const WORK_MAX_SIDE_PX = 512;           // decoding.WORK_MAX_SIDE_PX: ink finding needs no more
const MAX_SIDE_PX = 4096;               // decoding.Limits: what the server refuses, refused here too
const MAX_PIXELS = 16_000_000;
const DIGIT_BOX_PX = 20;                // MNIST: the longer side scaled to 20 px ...
const CANVAS_PX = 28;                   // ... and centred by mass in a 28x28 field
const STROKE_RATIO_RANGE = [0.06, 0.19];
const STROKE_RATIO_TARGET = 0.12;
const OTSU_BINS = 64;
const ONE_255TH = f32(1 / 255);         // NumPy: uint8 * np.float32(1 / 255)
const LUMA_WEIGHTS = [0.299, 0.587, 0.114].map(f32);  // decoding.LUMA_WEIGHTS

// --- Luminance (decoding.decode, _array_to_luminance) -------------------------------------------

// ImageData-like {data: RGBA bytes, width, height} -> a float32 gray plane in [0, 1], at most 512 px a side.
export function luminance(imageData) {
  const { data, width, height } = imageData;
  checkSize(width, height);
  const n = width * height;
  const gray = new Float32Array(n), alpha = new Float32Array(n);
  let minAlpha = Infinity, opaque = 0;
  for (let i = 0; i < n; i++) {
    const p = 4 * i;
    if (i > 0 && data[p] === data[p - 4] && data[p + 1] === data[p - 3] && data[p + 2] === data[p - 2]) {
      gray[i] = gray[i - 1];   // most of a canvas is one colour: its weighting is already known
    } else {
      gray[i] = weighted(f32(data[p] * ONE_255TH), f32(data[p + 1] * ONE_255TH), f32(data[p + 2] * ONE_255TH));
    }
    alpha[i] = f32(data[p + 3] * ONE_255TH);
    if (alpha[i] < minAlpha) minAlpha = alpha[i];
    if (alpha[i] > 0.5) opaque++;
  }
  if (minAlpha < 0.98) {
    // Strokes on a transparent canvas: the alpha channel *is* the drawing. A mostly opaque picture with a few
    // transparent pixels is flattened on white instead.
    for (let i = 0; i < n; i++) {
      gray[i] = 2 * opaque < n ? f32(1 - alpha[i]) : f32(f32(gray[i] * alpha[i]) + f32(1 - alpha[i]));
    }
  }
  const plane = { data: gray, width, height };
  if (Math.max(width, height) <= WORK_MAX_SIDE_PX) return plane;
  const shrink = WORK_MAX_SIDE_PX / Math.max(width, height);
  const size = [width, height].map((side) => Math.max(1, roundHalfEven(side * shrink)));
  return resize(plane, size[0], size[1], BOX);
}

function checkSize(width, height) {
  if (!(width >= 1 && height >= 1)) throw new Error(`the image is empty (${width}x${height} px)`);
  if (Math.max(width, height) > MAX_SIDE_PX || width * height > MAX_PIXELS) {
    throw new Error(`the image is ${width}x${height} px; the limit is ${MAX_SIDE_PX} px a side and 16 megapixels`);
  }
}

// decoding._array_to_luminance's three float32 products and two sums, in its order, each rounded once: identical on
// every CPU and browser. Each product of two float32 values is exact in a double, and so is each sum: the terms lie
// in [4e-4, 1] (or are 0), within 29 bits of each other, so f32() is the only rounding.
function weighted(r, g, b) {
  return f32(f32(f32(r * LUMA_WEIGHTS[0]) + f32(g * LUMA_WEIGHTS[1])) + f32(b * LUMA_WEIGHTS[2]));
}

// --- Ink (preprocess._ink_and_box) --------------------------------------------------------------

// Gray plane -> {ink, box}: ink in [0, 1] (1 = full stroke) and the box outside which it is exactly 0
// (null: no ink worth reading).
function inkAndBox(gray) {
  const { data, width: w, height: h } = gray;
  const [low, level, high] = quantiles(borderOf(gray), [0.1, 0.5, 0.9]);
  // The background is what most of the border (and most of the image) is: ink is the minority.
  const darkOnLight = 0.5 * (level + quantiles(everyThird(gray), [0.5])[0]) > 0.5;
  const flat = high - low < 0.08 || Math.min(w, h) < 16;
  const inkData = flat ? flatInk(data, level, darkOnLight) : unevenInk(gray, darkOnLight);
  const ink = { data: inkData, width: w, height: h };
  const box = boundingBox(ink);
  let peak = 0;
  if (box) forBox(box, w, (i) => { peak = Math.max(peak, ink.data[i]); });
  if (peak < 0.15) return { ink, box: null };   // no contrast anywhere: a blank page, whatever its colour
  // Otsu on the even rows and columns: the sampled pixels outside the box are all 0, counted, not visited.
  const sampled = [];
  for (let y = box.top + (box.top % 2); y < box.bottom; y += 2) {
    for (let x = box.left + (box.left % 2); x < box.right; x += 2) sampled.push(f32(ink.data[y * w + x] / peak));
  }
  const zerosOutside = ((h + 1) >> 1) * ((w + 1) >> 1) - sampled.length;
  const cut = otsu(sampled, zerosOutside) * peak;
  // Scale so the core of the strokes is full ink; keep anti-aliased edges, drop grain below half the cut.
  // NumPy casts a Python float to float32 before using it with a float32 array: so do these.
  const cut32 = f32(cut), strokes = [];
  forBox(box, w, (i) => { if (ink.data[i] > cut32) strokes.push(ink.data[i]); });
  const core = Math.max(strokes.length ? quantiles(strokes, [0.9])[0] : peak, 1e-6);
  const floor = 0.5 * cut / core;
  const shift = f32(floor * core), gain = f32(1 / Math.max(core * (1 - floor), 1e-6));
  forBox(box, w, (i) => { ink.data[i] = clip01(f32(f32(ink.data[i] - shift) * gain)); });
  return { ink, box };
}

// A flat background (a canvas, a scan): ink measured from its level.
function flatInk(gray, level, darkOnLight) {
  const ink = new Float32Array(gray.length);
  const scale = f32(1 / Math.max(level, 1e-3)), level32 = f32(level);
  for (let i = 0; i < gray.length; i++) {
    ink[i] = clip01(darkOnLight ? f32(1 - f32(gray[i] * scale)) : f32(gray[i] - level32));
  }
  return ink;
}

// Uneven lighting: the background from the brightest paper (or darkest board) within a third of the image,
// smoothed. A canvas only comes here when a stroke covers much of its edge.
function unevenInk(gray, darkOnLight) {
  const size = Math.max(3, Math.floor(Math.min(gray.width, gray.height) / 3));
  const background = uniformFilter(extremumFilter(gray, size, !darkOnLight), size).data;
  const ink = new Float32Array(gray.data.length), floor = f32(1e-3);
  for (let i = 0; i < ink.length; i++) {
    const g = gray.data[i];
    ink[i] = clip01(darkOnLight ? f32(1 - f32(g / Math.max(background[i], floor))) : f32(g - background[i]));
  }
  return ink;
}

function borderOf({ data, width: w, height: h }) {
  const out = new Float32Array(2 * (w + h));
  for (let x = 0; x < w; x++) [out[2 * x], out[2 * x + 1]] = [data[x], data[(h - 1) * w + x]];
  for (let y = 0; y < h; y++) [out[2 * (w + y)], out[2 * (w + y) + 1]] = [data[y * w], data[y * w + w - 1]];
  return out;
}

function everyThird({ data, width: w, height: h }) {
  const out = new Float32Array(Math.ceil(h / 3) * Math.ceil(w / 3));
  let k = 0;
  for (let y = 0; y < h; y += 3) for (let x = 0; x < w; x += 3) out[k++] = data[y * w + x];
  return out;
}

// preprocess._quantiles: np.quantile's linear interpolation between order statistics, in double.
function quantiles(values, qs) {
  const sorted = (values instanceof Float32Array ? values : Float32Array.from(values)).sort();   // in place
  const last = sorted.length - 1;
  return qs.map((q) => {
    const p = q * last, lo = Math.trunc(p);
    const a = sorted[lo], b = sorted[Math.min(lo + 1, last)];
    return a + (p - lo) * (b - a);
  });
}

// preprocess._otsu: Otsu's threshold of values in [0, 1] (64 bins) and of `zeros` more zeros. Every sum here
// is of multiples of 1/128 far below 2^53, so exact in any order.
function otsu(values, zeros) {
  const hist = new Float64Array(OTSU_BINS);
  values.forEach((v) => { hist[Math.min(Math.trunc(v * OTSU_BINS), OTSU_BINS - 1)]++; });
  hist[0] += zeros;
  const center = (k) => (k + 0.5) / OTSU_BINS;
  let total = 0, mass = 0;
  hist.forEach((count, k) => { total += count; mass += count * center(k); });
  if (total === 0) return 0.5;
  let w0 = 0, m0Sum = 0, best = -Infinity, bestK = 0;
  hist.forEach((count, k) => {
    w0 += count;
    m0Sum += count * center(k);
    const w1 = total - w0;
    const d = m0Sum / Math.max(w0, 1) - (mass - m0Sum) / Math.max(w1, 1);
    const between = w0 * w1 * (d * d);
    if (between > best) [best, bestK] = [between, k];   // np.argmax: the first of equals
  });
  return center(bestK);
}

// --- Masks (preprocess.label_in_box, _keep_significant, bounding_box, _dilate_cross, _erode_cross) ------

// The box of a plane's nonzero values, or null.
function boundingBox({ data, width: w, height: h }) {
  let top = h, bottom = -1, left = w, right = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (data[y * w + x] > 0) {
        top = Math.min(top, y); bottom = y;
        left = Math.min(left, x); right = Math.max(right, x);
      }
    }
  }
  return bottom < 0 ? null : { top, bottom: bottom + 1, left, right: right + 1 };
}

function forBox(box, width, visit) {
  for (let y = box.top; y < box.bottom; y++) for (let x = box.left; x < box.right; x++) visit(y * width + x);
}

function crop(plane, box) {
  const width = box.right - box.left, height = box.bottom - box.top;
  const data = new plane.data.constructor(width * height);
  for (let y = 0; y < height; y++) {
    const from = (box.top + y) * plane.width + box.left;
    data.set(plane.data.subarray(from, from + width), y * width);
  }
  return { data, width, height };
}

function countOf(mask) {
  let count = 0;
  for (let i = 0; i < mask.data.length; i++) count += mask.data[i];
  return count;
}

// The mask without specks: components (8-connected, diagonal neighbours belong together: thin slanted strokes)
// smaller than 2% of the largest, or of a single pixel.
function keepSignificant(mask) {
  const box = boundingBox(mask);
  if (!box) return mask;
  const { labels, areas } = labelComponents(crop(mask, box));
  const least = Math.max(2, 0.02 * areas.reduce((a, b) => Math.max(a, b), 0));
  if (areas.every((area) => area >= least)) return mask;   // nothing to drop: the usual case for a drawing
  const out = { data: new Uint8Array(mask.data.length), width: mask.width, height: mask.height };
  const boxWidth = box.right - box.left;
  forBox(box, mask.width, (i) => {
    const label = labels[(Math.floor(i / mask.width) - box.top) * boxWidth + (i % mask.width) - box.left];
    if (label > 0 && areas[label - 1] >= least) out.data[i] = 1;
  });
  return out;
}

// ndimage.label with a 3x3 structure: labels from 1 (0 = background), and each component's area.
function labelComponents({ data, width: w, height: h }) {
  const labels = new Int32Array(w * h), areas = [];
  for (let start = 0; start < data.length; start++) {
    if (!data[start] || labels[start]) continue;
    const label = areas.length + 1, stack = [start];
    labels[start] = label;
    let area = 0;
    while (stack.length) {
      const i = stack.pop(), y = Math.floor(i / w), x = i % w;
      area++;
      for (let ny = Math.max(0, y - 1); ny <= Math.min(h - 1, y + 1); ny++) {
        for (let nx = Math.max(0, x - 1); nx <= Math.min(w - 1, x + 1); nx++) {
          const j = ny * w + nx;
          if (data[j] && !labels[j]) { labels[j] = label; stack.push(j); }
        }
      }
    }
    areas.push(area);
  }
  return { labels, areas };
}

// Binary dilation and erosion by the 4-neighbour cross; outside the plane counts as background.
function crossOp({ data, width: w, height: h }, dilate) {
  const out = new Uint8Array(data.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      const up = y > 0 && data[i - w], down = y < h - 1 && data[i + w];
      const left = x > 0 && data[i - 1], right = x < w - 1 && data[i + 1];
      out[i] = dilate ? +!!(data[i] || up || down || left || right) : +!!(data[i] && up && down && left && right);
    }
  }
  return { data: out, width: w, height: h };
}

// Mean stroke width: area / half the perimeter (a stroke of length L and width w has area Lw, perimeter ~2L).
function strokeWidth(mask) {
  const inner = crossOp(mask, false).data;
  let edge = 0;
  for (let i = 0; i < inner.length; i++) if (mask.data[i] && !inner[i]) edge++;
  return 2 * countOf(mask) / Math.max(edge, 1);
}

// --- Filters (scipy.ndimage, mode "reflect": d c b a | a b c d | d c b a) --------------------------

// ndimage.minimum_filter / maximum_filter (and grey_erosion / grey_dilation) with a square `size`: separable,
// one axis then the other. Reflected pixels repeat ones already in the window, so the window is just clipped.
function extremumFilter(plane, size, minimum) {
  return alongAxes(plane, (line) => slidingExtremum(line, size, minimum));
}

function slidingExtremum(line, size, minimum) {
  const n = line.length, before = Math.floor(size / 2), after = size - before - 1;
  const out = new Float64Array(n), queue = [];   // indices whose values are monotonic: the front is the answer
  const beats = (a, b) => (minimum ? a <= b : a >= b);
  let next = 0;
  for (let i = 0; i < n; i++) {
    for (; next <= Math.min(n - 1, i + after); next++) {
      while (queue.length && beats(line[next], line[queue[queue.length - 1]])) queue.pop();
      queue.push(next);
    }
    while (queue[0] < i - before) queue.shift();
    out[i] = line[queue[0]];
  }
  return out;
}

// ndimage.uniform_filter: per axis, scipy's running sum in double (exact for float32 values in [0, 1]) divided
// at each pixel, stored as float32 between the axes.
function uniformFilter(plane, size) {
  return alongAxes(plane, (line) => {
    const n = line.length, before = Math.floor(size / 2);
    const at = (j) => line[reflect(j - before, n)];   // scipy's extended line, from its first element
    const out = new Float64Array(n);
    let sum = 0;
    for (let j = 0; j < size; j++) sum += at(j);
    out[0] = sum / size;
    for (let i = 1; i < n; i++) {
      sum += at(i - 1 + size) - at(i - 1);
      out[i] = sum / size;
    }
    return out;
  });
}

function reflect(j, n) {
  const period = 2 * n, k = ((j % period) + period) % period;
  return k < n ? k : period - 1 - k;
}

// Filters a float32 plane down its columns (axis 0), then along its rows, storing float32 after each.
function alongAxes({ data, width: w, height: h }, filter) {
  const tmp = new Float32Array(data.length), out = new Float32Array(data.length);
  const column = new Float64Array(h), row = new Float64Array(w);
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) column[y] = data[y * w + x];
    filter(column).forEach((v, y) => { tmp[y * w + x] = v; });
  }
  for (let y = 0; y < h; y++) {
    row.set(tmp.subarray(y * w, (y + 1) * w));
    out.set(filter(row), y * w);
  }
  return { data: out, width: w, height: h };
}

// --- Resizing (Pillow's Image.resize of a mode "F" image, libImaging/Resample.c) -------------------

const BOX = { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) };
const BICUBIC = { support: 2, weight: bicubic };
const LANCZOS = { support: 3, weight: (x) => (-3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0) };

function bicubic(x) {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

function sinc(x) {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

// Pillow resamples along one side, then the other, each pass summing in double and storing float32, and skips a
// pass whose side is unchanged (a lanczos pass at scale 1 is not quite the identity, so the skip matters). The
// order changes the rounding: Pillow 13 goes vertical first when the height loses more than twice as many pixels
// as the width (measured against it on thousands of random sizes), else horizontal first.
function resize(plane, width, height, filter) {
  const { width: w, height: h } = plane;
  const verticalFirst = height < h && h - height > 2 * (w - width);
  let out = plane;
  if (verticalFirst) out = resamplePass(out, height, filter, false);
  if (width !== w) out = resamplePass(out, width, filter, true);
  if (height !== h && !verticalFirst) out = resamplePass(out, height, filter, false);
  return out;
}

function resamplePass({ data, width: w, height: h }, size, filter, horizontal) {
  const taps = coefficients(horizontal ? w : h, size, filter);
  const [outW, outH] = horizontal ? [size, h] : [w, size];
  const out = new Float32Array(outW * outH);
  // Along a row the taps are 1 pixel apart, down a column `w`: one loop for both.
  const step = horizontal ? 1 : w;
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const { start, weights } = taps[horizontal ? x : y];
      let sum = 0, at = horizontal ? y * w + start : start * w + x;
      for (let k = 0; k < weights.length; k++, at += step) sum += data[at] * weights[k];
      out[y * outW + x] = sum;
    }
  }
  return { data: out, width: outW, height: outH };
}

// Resample.c's precompute_coeffs: for each output pixel, the first input pixel it reads and the weights,
// the filter stretched by the scale when shrinking, normalised to sum 1.
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize, filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale, ss = 1 / filterScale;
  const taps = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const start = Math.max(Math.trunc(center - support + 0.5), 0);
    const count = Math.min(Math.trunc(center + support + 0.5), inSize) - start;
    const weights = new Float64Array(Math.max(count, 0));
    let total = 0;
    for (let x = 0; x < count; x++) {
      weights[x] = filter.weight((x + start - center + 0.5) * ss);
      total += weights[x];
    }
    if (total !== 0) for (let x = 0; x < count; x++) weights[x] /= total;
    taps.push({ start, weights });
  }
  return taps;
}

// --- MNIST-style normalisation (preprocess.normalize_ink, near_blank, to_mnist) --------------------

// ImageData-like {data: RGBA bytes, width, height} -> the model's input: Uint8Array(784), 28x28 row-major,
// white ink on black; null when there is no drawing (to_mnist's None).
export function toMnist(imageData) {
  const { ink, box } = inkAndBox(luminance(imageData));
  if (!box) return null;
  // Everything from here on sees the ink's box only: the same crop, found in a fraction of the pixels.
  const inside = crop(ink, box);
  const strong = new Uint8Array(inside.data.length);
  for (let i = 0; i < strong.length; i++) strong[i] = inside.data[i] > 0.25 ? 1 : 0;
  const mask = keepSignificant({ data: strong, width: inside.width, height: inside.height });
  if (nearBlank(countOf(mask), ink.width * ink.height)) return null;
  return normalizeInk(inside, mask);
}

// A dot or a few pixels of noise is not a drawing.
function nearBlank(inkPixels, imagePixels) {
  return inkPixels < Math.max(4, 0.0005 * imagePixels);
}

// The 28x28 bytes of the ink under `mask`: cropped to the mask's box, extreme stroke widths fixed, the longer
// side scaled to 20 px, centred by mass.
function normalizeInk(ink, mask) {
  const box = boundingBox(mask);
  if (!box) return null;
  const cropMask = crop(mask, box), rim = crossOp(cropMask, true).data;
  // Only the kept strokes (and their anti-aliased rim): specks and other digits inside the box are dropped.
  const cropped = crop(ink, box);
  let digit = { ...cropped, data: cropped.data.map((v, i) => (rim[i] ? v : 0)) };
  const longer = Math.max(digit.width, digit.height);
  const ratio = strokeWidth(cropMask) / longer;
  if (longer >= 24 && !(STROKE_RATIO_RANGE[0] <= ratio && ratio <= STROKE_RATIO_RANGE[1])) {
    // A thick brush on a small digit (or a fine pen on a big one) would look nothing like MNIST after scaling;
    // capped, since a thick pen that filled the loops looks like a blob to the estimate.
    let steps = roundHalfEven((ratio - STROKE_RATIO_TARGET) * longer / 2);
    steps = Math.max(-roundHalfEven(0.03 * longer), Math.min(steps, roundHalfEven(0.04 * longer)));
    if (steps !== 0) digit = extremumFilter(digit, 2 * Math.abs(steps) + 1, steps > 0);
  }
  const scale = DIGIT_BOX_PX / longer;
  const [width, height] = [digit.width, digit.height].map((side) => Math.max(1, roundHalfEven(side * scale)));
  const small = resize(digit, width, height, scale < 1 ? LANCZOS : BICUBIC).data.map(clip01);
  const total = pairwiseSum(small, f32);
  if (total <= 0) return null;
  // The centre of mass as NumPy sums it: float64 products, summed pairwise, over the float32 total.
  const cy = pairwiseSum(Float64Array.from(small, (v, i) => v * Math.floor(i / width)), (v) => v) / total;
  const cx = pairwiseSum(Float64Array.from(small, (v, i) => v * (i % width)), (v) => v) / total;
  const top = Math.min(Math.max(roundHalfEven(CANVAS_PX / 2 - cy), 0), CANVAS_PX - height);
  const left = Math.min(Math.max(roundHalfEven(CANVAS_PX / 2 - cx), 0), CANVAS_PX - width);
  const out = new Uint8Array(CANVAS_PX * CANVAS_PX);
  small.forEach((v, i) => {
    out[(top + Math.floor(i / width)) * CANVAS_PX + left + (i % width)] = roundHalfEven(f32(v * 255));
  });
  return out;
}

// NumPy's sum: pairwise halves down to blocks of at most 128, each added by 8 accumulators, rounding each
// addition with `round` (f32 for a float32 array). The order fixes the rounding, so it is NumPy's.
function pairwiseSum(values, round, start = 0, n = values.length) {
  if (n < 8) {
    let sum = -0;
    for (let i = 0; i < n; i++) sum = round(sum + values[start + i]);
    return sum;
  }
  if (n <= 128) {
    const r = Array.from(values.subarray(start, start + 8));
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] = round(r[j] + values[start + i + j]);
    const pair = (a, b) => round(r[a] + r[b]);
    let sum = round(round(pair(0, 1) + pair(2, 3)) + round(pair(4, 5) + pair(6, 7)));
    for (; i < n; i++) sum = round(sum + values[start + i]);
    return sum;
  }
  let half = Math.floor(n / 2);
  half -= half % 8;
  return round(pairwiseSum(values, round, start, half) + pairwiseSum(values, round, start + half, n - half));
}

function clip01(v) {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

// Python's round and np.round: halves to the even neighbour (2.5 -> 2, 3.5 -> 4), where Math.round goes up.
function roundHalfEven(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
