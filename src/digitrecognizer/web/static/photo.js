// Photos chosen or dropped on the pad: decoded in the browser and, when large, shrunk before upload, so a
// 9 MB phone photo is read instead of refused. The model reads 28x28 pixels; 2,048 px a side is plenty.

const MAX_SIDE_PX = 2048;
const MAX_UPLOAD_BYTES = 4_500_000;   // under the server's 5 MB body limit, with room for the form around it

// {bitmap, upload}: the picture to show on the pad (null when the browser can't decode it) and the Blob to send.
export async function preparePhoto(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return { bitmap: null, upload: file };   // the server says what is wrong with it
  }
  const scale = Math.min(1, MAX_SIDE_PX / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.size <= MAX_UPLOAD_BYTES) return { bitmap, upload: file };
  const shrunk = await shrink(bitmap, scale, file.type);
  return { bitmap, upload: shrunk || file };
}

async function shrink(bitmap, scale, type) {
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  // PNG keeps transparency (strokes on a transparent background); a photo that is still too large goes as JPEG.
  let blob = type === "image/jpeg" ? null : await encode(canvas, "image/png");
  if (!blob || blob.size > MAX_UPLOAD_BYTES) blob = await encode(canvas, "image/jpeg", 0.9);
  return blob && new File([blob], "photo" + (blob.type === "image/png" ? ".png" : ".jpg"), { type: blob.type });
}

function encode(canvas, type, quality) {
  return new Promise((resolve) => canvas.toBlob(resolve, type, quality));
}
