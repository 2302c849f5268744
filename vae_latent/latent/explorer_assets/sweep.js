// The sweep page: one latent coordinate decoded by every selected run.
const RUNS = DATA.runs;
const SIZES = Array.from(new Set(RUNS.map((r) => r.latent_dim))).sort((a, b) => a - b);
const TIER_NAME = {};
for (const [key, name] of DATA.tiers) TIER_NAME[key] = name;
const state = { latent: SIZES.includes(2) ? 2 : SIZES[0], selected: new Set(RUNS.map((r) => r.id)),
  cursor: { x: 0, y: 0 },
  tiles: [] };
const sheets = {};
const pad = $("pad");
let padCtx = null, padW = 320, padH = 320, padBox = null;
const PM = { l: 44, r: 10, t: 10, b: 40 };

function tileScale(run) {
  return Math.max(1, Math.floor(168 / Math.max(run.image.height, run.image.width)));
}
function oneD() { return state.latent === 1; }
function runsAt(d) { return RUNS.filter((r) => r.latent_dim === d); }
function axisNames() {
  if (state.latent === 1) return ["z1", ""];
  if (state.latent === 2) return ["z1", "z2"];
  return ["1st top-KL dimension", "2nd top-KL dimension"];
}
function gridBox() {  // the union of the shown runs' grids: usually the common prior range
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const r of runsAt(state.latent)) {
    const g = r.grid;
    x0 = Math.min(x0, g.x[0]); x1 = Math.max(x1, g.x[g.x.length - 1]);
    y0 = Math.min(y0, g.y[0]); y1 = Math.max(y1, g.y[g.y.length - 1]);
  }
  if (oneD()) { y0 = -1; y1 = 1; }
  return { x0: x0, x1: x1, y0: y0, y1: y1 };
}
function padRect() { return { x: PM.l, y: PM.t, w: padW - PM.l - PM.r, h: padH - PM.t - PM.b }; }
function padScreen(x, y) {
  const r = padRect(), b = padBox;
  return [r.x + (x - b.x0) / (b.x1 - b.x0) * r.w, r.y + r.h - (y - b.y0) / (b.y1 - b.y0) * r.h];
}
function padLatent(sx, sy) {
  const r = padRect(), b = padBox;
  return [b.x0 + (sx - r.x) / r.w * (b.x1 - b.x0), b.y0 + (r.y + r.h - sy) / r.h * (b.y1 - b.y0)];
}
function layoutPad() {
  padBox = gridBox();
  padW = 320;
  padH = oneD() ? 110 : 320;
  padCtx = sized(pad, padW, padH);
}
function drawPad() {
  const c = padCtx, r = padRect(), b = padBox;
  c.clearRect(0, 0, padW, padH);
  c.fillStyle = "#fff"; c.fillRect(r.x, r.y, r.w, r.h);
  c.save(); c.beginPath(); c.rect(r.x, r.y, r.w, r.h); c.clip();
  c.strokeStyle = "#eceef1"; c.lineWidth = 1; c.beginPath();
  const [zx, zy] = padScreen(0, 0);
  c.moveTo(zx, r.y); c.lineTo(zx, r.y + r.h);
  if (!oneD()) { c.moveTo(r.x, zy); c.lineTo(r.x + r.w, zy); }
  c.stroke();
  if (!oneD()) {  // the prior's 1, 2 and 3 standard-deviation circles
    c.strokeStyle = "#c9ced6"; c.setLineDash([4, 4]);
    for (const s of [1, 2, 3]) {
      const [ex] = padScreen(s, 0);
      c.beginPath(); c.arc(zx, zy, Math.abs(ex - zx), 0, 2 * Math.PI); c.stroke();
    }
    c.setLineDash([]);
  }
  const [cx, cy] = padScreen(state.cursor.x, oneD() ? 0 : state.cursor.y);
  for (const [w, col] of [[3.5, "#fff"], [1.5, "#111"]]) {
    c.lineWidth = w; c.strokeStyle = col; c.beginPath();
    c.moveTo(cx - 11, cy); c.lineTo(cx - 3, cy); c.moveTo(cx + 3, cy); c.lineTo(cx + 11, cy);
    c.moveTo(cx, cy - 11); c.lineTo(cx, cy - 3); c.moveTo(cx, cy + 3); c.lineTo(cx, cy + 11);
    c.stroke();
  }
  c.restore();
  c.strokeStyle = "#9aa1ab"; c.lineWidth = 1; c.strokeRect(r.x + 0.5, r.y + 0.5, r.w - 1, r.h - 1);
  c.fillStyle = "#3b434d"; c.font = FONT; c.textAlign = "center"; c.textBaseline = "top";
  for (const t of niceTicks(b.x0, b.x1, 6)) {
    const [sx] = padScreen(t.value, 0);
    c.beginPath(); c.moveTo(sx, r.y + r.h); c.lineTo(sx, r.y + r.h + 4); c.stroke();
    c.fillText(t.text, sx, r.y + r.h + 6);
  }
  if (!oneD()) {
    c.textAlign = "right"; c.textBaseline = "middle";
    for (const t of niceTicks(b.y0, b.y1, 6)) {
      const sy = padScreen(0, t.value)[1];
      c.beginPath(); c.moveTo(r.x - 4, sy); c.lineTo(r.x, sy); c.stroke();
      c.fillText(t.text, r.x - 7, sy);
    }
  }
  const names = axisNames();
  c.font = TITLE_FONT; c.fillStyle = "#1d232b"; c.textAlign = "center"; c.textBaseline = "bottom";
  c.fillText(names[0], r.x + r.w / 2, padH - 4);
  if (!oneD()) {
    c.save(); c.translate(12, r.y + r.h / 2); c.rotate(-Math.PI / 2); c.textBaseline = "middle";
    c.fillText(names[1], 0, 0); c.restore();
  }
  const names2 = axisNames();
  $("pad-readout").textContent = "cursor: " + names2[0] + " = " + fixed(state.cursor.x, 3) +
    (oneD() ? "" : ", " + names2[1] + " = " + fixed(state.cursor.y, 3));
}
function shownRuns() {
  return RUNS.filter((r) => r.latent_dim === state.latent && state.selected.has(r.id));
}
function buildTiles() {
  const box = $("tiles");
  box.textContent = "";
  state.tiles = [];
  const shown = shownRuns();
  if (!shown.length) {
    const p = document.createElement("p"); p.className = "empty";
    p.textContent = "No run of latent size " + state.latent + " is selected.";
    box.appendChild(p);
  }
  for (const run of shown) {
    const card = document.createElement("article"); card.className = "tile-card";
    card.dataset.run = run.id;
    const badge = document.createElement("span"); badge.className = "badge " + run.tier;
    badge.textContent = run.tier_name || run.tier || "run";
    const h = document.createElement("h3"); h.textContent = run.title;
    const cv = document.createElement("canvas"); cv.className = "pixels";
    const where = document.createElement("div"); where.className = "readout";
    const dl = document.createElement("dl"); dl.className = "numbers"; numbersInto(dl, run.numbers);
    // The image right under the badge: tiles line up whatever the titles' lengths.
    card.appendChild(badge); card.appendChild(cv); card.appendChild(where); card.appendChild(h);
    card.appendChild(dl);
    box.appendChild(card);
    state.tiles.push({ run: run, canvas: cv, where: where, info: null });
  }
  drawTiles();
}
function drawTiles() {
  for (const t of state.tiles) {
    const run = t.run, g = run.grid, p = run.plane;
    const ix = nearestIndex(g.x, state.cursor.x);
    const iy = p.y_kind === "class" ? 0 : nearestIndex(g.y, state.cursor.y);
    drawSprite(t.canvas, sheets[run.id], iy * g.x.length + ix, tileScale(run));
    t.info = { ix: ix, iy: iy, x: g.x[ix], y: g.y[iy] };
    const names = p.axis_names;
    let text = "grid point " + names[0] + " = " + fixed(g.x[ix], 2) +
      (p.y_kind === "class" ? "" : ", " + names[1] + " = " + fixed(g.y[iy], 2));
    if (run.reference) text += "; the other " + (run.latent_dim - 2) + " at the mean test code";
    t.where.textContent = text;
  }
}
function setCursor(x, y) { state.cursor = { x: x, y: oneD() ? 0 : y }; drawPad(); drawTiles(); }
function setLatent(d) {
  if (!SIZES.includes(d)) throw new Error("no run of latent size " + d);
  state.latent = d;
  for (const b of document.querySelectorAll("#sizes button")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.size) === d));
  }
  for (const input of document.querySelectorAll("#run-groups input")) {
    const run = RUNS[RUNS.findIndex((r) => String(r.id) === input.value)];
    input.disabled = run.latent_dim !== d;
    input.parentElement.classList.toggle("disabled", input.disabled);
  }
  layoutPad();
  const note = d === 1 ? "Latent size 1: the cursor moves along z1 only." : d === 2
    ? "Latent size 2: every run decodes the same (z1, z2)."
    : "Latent size " + d + ": each run decodes the cursor on its own two highest-KL dimensions " +
      "(named on each tile; they need not be the same dimensions), the others held at that run's " +
      "mean test code.";
  $("pad-note").textContent = note +
    " Each tile is the nearest point of that run's prior-range grid " +
    "(\u00b1" + fixed((padBox.x1 - padBox.x0) / 2, 0) + ").";
  state.cursor = { x: 0, y: 0 };
  buildTiles();
  drawPad();
}
function buildPicker() {
  const sizes = $("sizes");
  for (const d of SIZES) {
    const b = document.createElement("button"); b.type = "button"; b.dataset.size = d;
    const n = runsAt(d).length;
    b.textContent = "latent " + d + " \u00b7 " + n + (n === 1 ? " run" : " runs");
    b.addEventListener("click", () => setLatent(d));
    sizes.appendChild(b);
  }
  const groups = $("run-groups"), order = DATA.tiers.map((t) => t[0]);
  const tiers = Array.from(new Set(RUNS.map((r) => r.tier)));
  const rank = (t) => (order.includes(t) ? order.indexOf(t) : order.length);
  tiers.sort((a, b) => rank(a) - rank(b));
  for (const tier of tiers) {
    const fs = document.createElement("fieldset"); fs.className = "tier";
    const lg = document.createElement("legend");
    lg.textContent = TIER_NAME[tier] || tier || "other";
    fs.appendChild(lg);
    for (const run of RUNS.filter((r) => r.tier === tier)) {
      const label = document.createElement("label"), input = document.createElement("input");
      input.type = "checkbox"; input.value = run.id; input.checked = true;
      input.addEventListener("change", () => {
        if (input.checked) state.selected.add(run.id); else state.selected.delete(run.id);
        buildTiles();
      });
      const text = document.createElement("span");
      text.textContent = run.title + " ";
      const dim = document.createElement("span");
      dim.className = "dim"; dim.textContent = "(z=" + run.latent_dim + ")";
      text.appendChild(dim);
      label.appendChild(input); label.appendChild(text); fs.appendChild(label);
    }
    groups.appendChild(fs);
  }
}
function bindPad() {
  const move = (e) => {
    const [sx, sy] = localXY(pad, e), r = padRect();
    if (sx < r.x || sx > r.x + r.w || sy < r.y || sy > r.y + r.h) return;
    const [x, y] = padLatent(sx, sy);
    setCursor(x, y);
  };
  pad.addEventListener("pointermove", move);
  pad.addEventListener("pointerdown", move);
  pad.addEventListener("keydown", (e) => {
    const s = ARROWS[e.key];
    if (!s) return;
    e.preventDefault();
    setCursor(state.cursor.x + 0.1 * s[0], state.cursor.y + 0.1 * s[1]);
  });
}
function init() {
  $("title").textContent = DATA.title;
  $("subtitle").textContent = RUNS.length +
    " runs \u00b7 one latent coordinate decoded by every selected run of " +
    "the chosen latent size";
  const notes = $("notes");
  for (const t of ["Tiles are decoded ahead of time on each run's prior-range grid (the " +
    "same grid its own " +
    "explorer page uses) and shown at the grid point nearest the cursor; lossless PNG, uint8 = " +
    "round(255 \u00b7 mean image), nearest-neighbour upscaling.",
    "Runs of different latent sizes cannot share a coordinate: pick a latent size above."]) {
    const p = document.createElement("p"); p.textContent = t; notes.appendChild(p);
  }
  buildPicker();
  bindPad();
  return Promise.all(RUNS.map((r) => loadSprite(r.grid.sprite).then((s) => { sheets[r.id] = s; })))
    .then(() => {
      setLatent(state.latent);
      window.explorer.ready = true;
      document.documentElement.dataset.ready = "true";
    });
}
window.explorer = {
  ready: false,
  data: DATA,
  latentSizes: () => SIZES.slice(),
  setLatent: (d) => { setLatent(d); return state.latent; },
  selected: () => Array.from(state.selected).sort((a, b) => a - b),
  setSelected: (ids) => {
    state.selected = new Set(ids);
    for (const input of document.querySelectorAll("#run-groups input")) {
      input.checked = state.selected.has(Number(input.value));
    }
    buildTiles();
    return window.explorer.selected();
  },
  setCursor: (x, y) => { setCursor(x, y); return window.explorer.tiles(); },
  tiles: () => state.tiles.map((t) => Object.assign({ run: t.run.id, title: t.run.title,
    tier: t.run.tier,
    canvas: t.canvas, scale: tileScale(t.run) }, t.info)),
};
init().catch((err) => { console.error("explorer failed to start:", err); });
