// Shared by both pages: data access, sprite sheets, number and axis formatting.
const $ = (id) => document.getElementById(id);
const DATA = JSON.parse($("explorer-data").textContent);
// matplotlib's tab10: the colours the project's static scatter uses for the same classes.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
function classColour(c) {
  return c < PALETTE.length ? PALETTE[c] : "hsl(" + ((c * 137.508) % 360).toFixed(1) + ",55%,45%)";
}
function bytesOf(b64) {
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
const TYPED = { float32: Float32Array, int32: Int32Array, uint8: Uint8Array };
function unpack(spec) {
  const b = bytesOf(spec.b64), T = TYPED[spec.dtype];
  return new T(b.buffer, b.byteOffset, b.byteLength / T.BYTES_PER_ELEMENT);
}
// One PNG per sheet; resolves once the browser has decoded it (drawImage is then synchronous).
function loadSprite(spec) {
  const img = new Image();
  const loaded = new Promise((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new Error("a sprite sheet failed to load"));
  });
  img.src = "data:image/png;base64," + spec.png;
  return loaded
    .then(() => (img.decode ? img.decode().catch(() => undefined) : undefined))
    .then(() => ({ img: img, spec: spec }));
}
// Image k of a sheet, upscaled by an integer with nearest-neighbour sampling: every source
// pixel becomes a scale x scale block of the same value (what the tests compare).
function drawSprite(canvas, sheet, k, scale) {
  const s = sheet.spec, w = s.width, h = s.height;
  if (canvas.width !== w * scale || canvas.height !== h * scale) {
    canvas.width = w * scale;
    canvas.height = h * scale;
    canvas.style.width = w * scale + "px";
    canvas.style.height = h * scale + "px";
  }
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(sheet.img, (k % s.columns) * w, Math.floor(k / s.columns) * h, w, h,
    0, 0, w * scale, h * scale);
}
function blankCanvas(canvas, w, h) {
  canvas.width = w; canvas.height = h;
  canvas.style.width = w + "px"; canvas.style.height = h + "px";
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#eef0f3"; ctx.fillRect(0, 0, w, h);
}
const MINUS = "\u2212";
function signed(text) {  // a typographic minus, and no "-0.00"
  if (text.charAt(0) !== "-") return text;
  return /[1-9]/.test(text) ? MINUS + text.slice(1) : text.slice(1);
}
function fixed(v, digits) { return signed(Number(v).toFixed(digits)); }
function fmtNumber(v) {
  if (v === null || v === undefined) return "\u2014";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return signed(v.toLocaleString("en-US"));
  const a = Math.abs(v);
  return fixed(v, a >= 100 ? 1 : a >= 10 ? 2 : 3);
}
function numbersInto(dl, numbers) {
  dl.textContent = "";
  for (const n of numbers) {
    const div = document.createElement("div"), dt = document.createElement("dt"),
      dd = document.createElement("dd");
    dt.textContent = n.label; dd.textContent = fmtNumber(n.value);
    div.appendChild(dt); div.appendChild(dd); dl.appendChild(div);
  }
}
// Round tick steps (1, 2, 5 x 10^k) giving about `target` ticks between lo and hi.
function niceTicks(lo, hi, target) {
  const raw = (hi - lo) / Math.max(1, target);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push({ value: t, text: fixed(Math.abs(t) < step * 1e-9 ? 0 : t, decimals) });
  }
  return ticks;
}
// First index of the smallest |axis[k] - v| (ties go to the lower index, as numpy's argmin).
function nearestIndex(axis, v) {
  let best = 0, bestD = Infinity;
  for (let k = 0; k < axis.length; k++) {
    const d = Math.abs(axis[k] - v);
    if (d < bestD) { bestD = d; best = k; }
  }
  return best;
}
function sized(canvas, cssW, cssH) {  // a crisp canvas on high-DPI screens
  const r = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssW * r); canvas.height = Math.round(cssH * r);
  canvas.style.width = cssW + "px"; canvas.style.height = cssH + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(r, 0, 0, r, 0, 0);
  return ctx;
}
function localXY(canvas, e) {
  const r = canvas.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}
function codeText(code, max) {
  const shown = Array.from(code).slice(0, max).map((v) => fixed(v, 2));
  return "(" + shown.join(", ") + (code.length > max ? ", \u2026" : "") + ")";
}
const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
const FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
const TITLE_FONT = '600 13px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
