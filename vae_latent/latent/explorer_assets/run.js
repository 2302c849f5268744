// The run page: scatter, cursor tile, test points (window.explorer: see explorer.py).
const D = DATA.latent_dim, N = DATA.points.count;
const THUMBS = DATA.points.thumbnails === undefined ? N : DATA.points.thumbnails;
const means = unpack(DATA.points.means), labels = unpack(DATA.points.labels);
const testIndex = unpack(DATA.points.index);
const H = DATA.image.height, W = DATA.image.width, SCALE = DATA.tile_scale;
const THUMB = Math.max(1, Math.floor(112 / Math.max(H, W)));
const CLASSES = DATA.classes;
const canvas = $("scatter");
const hidden = new Set();
const sheets = {};
const state = { plane: null, xy: null, view: null, cursor: null, gridMode: "auto", tile: null,
  hover: -1, selected: -1, drawn: 0, drag: null, userView: false };
const M = { l: 58, r: 14, t: 12, b: 48 };
let cssW = 640, cssH = 560, ctx = null;

function jitter(i) {  // fixed per point: the class row of a 1-D latent is spread vertically
  const s = Math.sin((i + 1) * 12.9898) * 43758.5453;
  return 0.7 * (s - Math.floor(s) - 0.5);
}
function project(plane) {
  const xy = new Float64Array(2 * N), o = plane.origin, u = plane.u, v = plane.v;
  for (let i = 0; i < N; i++) {
    let x = 0, y = 0;
    for (let d = 0; d < D; d++) {
      const m = means[i * D + d] - o[d];
      x += m * u[d]; y += m * v[d];
    }
    xy[2 * i] = x;
    xy[2 * i + 1] = plane.y_kind === "class" ? labels[i] + jitter(i) : y;
  }
  return xy;
}
function box(grid) {
  const cls = state.plane.y_kind === "class";
  return { x0: grid.x[0], x1: grid.x[grid.x.length - 1],
    y0: cls ? -0.5 : grid.y[0], y1: cls ? CLASSES.length - 0.5 : grid.y[grid.y.length - 1] };
}
function rect() { return { x: M.l, y: M.t, w: cssW - M.l - M.r, h: cssH - M.t - M.b }; }
function toScreenX(x) {
  const r = rect();
  return r.x + r.w / 2 + (x - state.view.cx) * state.view.kx;
}
function toScreenY(y) {
  const r = rect();
  return r.y + r.h / 2 - (y - state.view.cy) * state.view.ky;
}
function toLatent(sx, sy) {
  const r = rect(), v = state.view;
  return [v.cx + (sx - r.x - r.w / 2) / v.kx, v.cy - (sy - r.y - r.h / 2) / v.ky];
}
function fitView(gridKind) {  // the data and the posterior grid; or one grid's box
  const p = state.plane, xy = state.xy, b = box(p.grids[gridKind || "posterior"]);
  let x0 = b.x0, x1 = b.x1, y0 = b.y0, y1 = b.y1;
  for (let i = 0; i < (gridKind ? 0 : N); i++) {
    x0 = Math.min(x0, xy[2 * i]); x1 = Math.max(x1, xy[2 * i]);
    if (p.y_kind !== "class") {
      y0 = Math.min(y0, xy[2 * i + 1]); y1 = Math.max(y1, xy[2 * i + 1]);
    }
  }
  const px = 0.03 * (x1 - x0 || 1), py = 0.03 * (y1 - y0 || 1);
  x0 -= px; x1 += px; y0 -= py; y1 += py;
  const r = rect();
  let kx = r.w / (x1 - x0), ky = r.h / (y1 - y0);
  if (p.y_kind !== "class") kx = ky = Math.min(kx, ky);  // one unit is as long on both axes
  state.view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, kx: kx, ky: ky };
  state.userView = false;
}
function layout() {
  const wrap = $("plot-wrap");
  cssW = Math.max(360, Math.floor(wrap.clientWidth));
  cssH = Math.round(Math.min(Math.max(cssW * 0.8, 340), 620));
  if (state.plane && state.plane.y_kind === "class") {  // room for the class names
    const probe = canvas.getContext("2d");
    probe.font = FONT;
    M.l = 22 + Math.max(...CLASSES.map((c) => probe.measureText(c).width));
  } else {
    M.l = 58;
  }
  ctx = sized(canvas, cssW, cssH);
}

function draw() {
  const r = rect(), p = state.plane, xy = state.xy, v = state.view;
  ctx.clearRect(0, 0, cssW, cssH);
  ctx.fillStyle = "#fff"; ctx.fillRect(r.x, r.y, r.w, r.h);
  ctx.save();
  ctx.beginPath(); ctx.rect(r.x, r.y, r.w, r.h); ctx.clip();
  // The zero lines (the prior's centre, for the latent planes).
  if (p.y_kind !== "class") {
    ctx.strokeStyle = "#eceef1"; ctx.lineWidth = 1; ctx.beginPath();
    const zx = toScreenX(-dot(p.origin, p.u)), zy = toScreenY(-dot(p.origin, p.v));
    ctx.moveTo(zx, r.y); ctx.lineTo(zx, r.y + r.h); ctx.moveTo(r.x, zy); ctx.lineTo(r.x + r.w, zy);
    ctx.stroke();
  }
  for (const kind of ["prior", "posterior"]) {  // where the decode grids reach
    const b = box(p.grids[kind]);
    const sx0 = toScreenX(b.x0), sx1 = toScreenX(b.x1);
    const sy0 = toScreenY(b.y1), sy1 = toScreenY(b.y0);
    ctx.lineWidth = 1.5;
    if (kind === "posterior") {
      ctx.fillStyle = "rgba(47,109,181,0.05)"; ctx.fillRect(sx0, sy0, sx1 - sx0, sy1 - sy0);
      ctx.strokeStyle = "rgba(47,109,181,0.8)"; ctx.setLineDash([]);
    } else {
      ctx.strokeStyle = "#8a8f98"; ctx.setLineDash([6, 4]);
    }
    ctx.strokeRect(sx0, sy0, sx1 - sx0, sy1 - sy0);
  }
  ctx.setLineDash([]);
  const rad = N > 4000 ? 2 : 2.6;
  let drawn = 0;
  ctx.globalAlpha = 0.8;
  const left = r.x - rad, right = r.x + r.w + rad, top = r.y - rad, bottom = r.y + r.h + rad;
  const ox = r.x + r.w / 2, oy = r.y + r.h / 2;
  for (let i = 0; i < N; i++) {
    if (hidden.has(labels[i])) continue;
    const sx = ox + (xy[2 * i] - v.cx) * v.kx, sy = oy - (xy[2 * i + 1] - v.cy) * v.ky;
    if (sx < left || sx > right || sy < top || sy > bottom) continue;
    ctx.fillStyle = classColour(labels[i]);
    ctx.beginPath(); ctx.arc(sx, sy, rad, 0, 2 * Math.PI); ctx.fill();
    if (i < THUMBS && THUMBS < N) {  // only some points carry images: mark those
      ctx.lineWidth = 1; ctx.strokeStyle = "#222"; ctx.stroke();
    }
    drawn++;
  }
  ctx.globalAlpha = 1;
  state.drawn = drawn;
  if (state.tile) {  // the grid point whose decode is shown, and the cursor itself
    const t = state.tile;
    const gx = toScreenX(t.x);
    const gy = p.y_kind === "class" ? toScreenY(state.cursor.y) : toScreenY(t.y);
    ctx.lineWidth = 1.5; ctx.strokeStyle = "#111"; ctx.strokeRect(gx - 4, gy - 4, 8, 8);
    const cx = toScreenX(state.cursor.x), cy = toScreenY(state.cursor.y);
    for (const [w, c] of [[3.5, "#fff"], [1.5, "#111"]]) {
      ctx.lineWidth = w; ctx.strokeStyle = c; ctx.beginPath();
      ctx.moveTo(cx - 11, cy); ctx.lineTo(cx - 3, cy);
      ctx.moveTo(cx + 3, cy); ctx.lineTo(cx + 11, cy);
      ctx.moveTo(cx, cy - 11); ctx.lineTo(cx, cy - 3);
      ctx.moveTo(cx, cy + 3); ctx.lineTo(cx, cy + 11);
      ctx.stroke();
    }
  }
  for (const [i, colour] of [[state.selected, "#111"], [state.hover, "#111"]]) {
    if (i < 0) continue;
    const sx = toScreenX(xy[2 * i]), sy = toScreenY(xy[2 * i + 1]);
    ctx.lineWidth = 3; ctx.strokeStyle = "#fff";
    ctx.beginPath(); ctx.arc(sx, sy, rad + 3.5, 0, 2 * Math.PI); ctx.stroke();
    ctx.lineWidth = 1.6; ctx.strokeStyle = colour;
    ctx.beginPath(); ctx.arc(sx, sy, rad + 3.5, 0, 2 * Math.PI); ctx.stroke();
  }
  ctx.restore();
  drawAxes(r, p);
}
function dot(a, b) { let s = 0; for (let d = 0; d < a.length; d++) s += a[d] * b[d]; return s; }
function drawAxes(r, p) {
  ctx.strokeStyle = "#9aa1ab"; ctx.lineWidth = 1;
  ctx.strokeRect(r.x + 0.5, r.y + 0.5, r.w - 1, r.h - 1);
  ctx.fillStyle = "#3b434d"; ctx.font = FONT;
  const [xlo] = toLatent(r.x, 0), [xhi] = toLatent(r.x + r.w, 0);
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of niceTicks(xlo, xhi, Math.max(3, Math.floor(r.w / 80)))) {
    const sx = toScreenX(t.value);
    ctx.beginPath(); ctx.moveTo(sx, r.y + r.h); ctx.lineTo(sx, r.y + r.h + 4); ctx.stroke();
    ctx.fillText(t.text, sx, r.y + r.h + 6);
  }
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  if (p.y_kind === "class") {
    CLASSES.forEach((name, c) => {
      const sy = toScreenY(c);
      if (sy < r.y || sy > r.y + r.h) return;
      ctx.beginPath(); ctx.moveTo(r.x - 4, sy); ctx.lineTo(r.x, sy); ctx.stroke();
      ctx.fillText(name, r.x - 7, sy);
    });
  } else {
    const ylo = toLatent(0, r.y + r.h)[1], yhi = toLatent(0, r.y)[1];
    for (const t of niceTicks(ylo, yhi, Math.max(3, Math.floor(r.h / 60)))) {
      const sy = toScreenY(t.value);
      ctx.beginPath(); ctx.moveTo(r.x - 4, sy); ctx.lineTo(r.x, sy); ctx.stroke();
      ctx.fillText(t.text, r.x - 7, sy);
    }
  }
  ctx.font = TITLE_FONT; ctx.fillStyle = "#1d232b";
  ctx.textAlign = "center"; ctx.textBaseline = "bottom";
  ctx.fillText(p.axes[0], r.x + r.w / 2, cssH - 4);
  if (p.y_kind !== "class") {
    ctx.save(); ctx.translate(14, r.y + r.h / 2); ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle"; ctx.fillText(p.axes[1], 0, 0); ctx.restore();
  }
}

function chooseGrid(x, y) {
  const g = state.plane.grids;
  if (state.gridMode !== "auto") return g[state.gridMode];
  const inside = (grid) => {
    const b = box(grid);
    return x >= b.x0 && x <= b.x1 && (state.plane.y_kind === "class" || (y >= b.y0 && y <= b.y1));
  };
  if (inside(g.posterior)) return g.posterior;  // the denser grid where the data lives
  if (inside(g.prior)) return g.prior;
  const dist = (grid) => {
    const b = box(grid);
    const dx = Math.max(b.x0 - x, 0, x - b.x1), dy = Math.max(b.y0 - y, 0, y - b.y1);
    return state.plane.y_kind === "class" ? dx : Math.hypot(dx, dy);
  };
  return dist(g.posterior) < dist(g.prior) ? g.posterior : g.prior;
}
function updateTile() {
  const p = state.plane, c = state.cursor, g = chooseGrid(c.x, c.y);
  const ix = nearestIndex(g.x, c.x), iy = p.y_kind === "class" ? 0 : nearestIndex(g.y, c.y);
  const index = iy * g.x.length + ix;
  drawSprite($("tile"), sheets[p.id + "/" + g.kind], index, SCALE);
  const b = box(g);
  const clamped = c.x < b.x0 || c.x > b.x1 || (p.y_kind !== "class" && (c.y < b.y0 || c.y > b.y1));
  state.tile = { plane: p.id, grid: g.kind, ix: ix, iy: iy, index: index, x: g.x[ix], y: g.y[iy],
    clamped: clamped };
  const names = p.axis_names;
  $("cursor-readout").textContent = p.y_kind === "class"
    ? "cursor: " + names[0] + " = " + fixed(c.x, 3)
    : "cursor: " + names[0] + " = " + fixed(c.x, 3) + ", " + names[1] + " = " + fixed(c.y, 3);
  const src = $("tile-source");
  src.textContent = "";
  const strong = document.createElement("b");
  strong.textContent = g.kind + " grid";
  src.appendChild(strong);
  const size = p.y_kind === "class" ? g.x.length + " points" : g.x.length + " \u00d7 " + g.y.length;
  let text = ", nearest point (" + (ix + 1) + (p.y_kind === "class" ? "" : ", " + (iy + 1)) +
    ") of " + size + ": " + names[0] + " = " + fixed(g.x[ix], 3) +
    (p.y_kind === "class" ? "" : ", " + names[1] + " = " + fixed(g.y[iy], 3)) + ".";
  if (clamped) text += " The cursor is outside this grid: its nearest edge point.";
  if (D > 2) {
    const z = p.origin.map((o, d) => o + g.x[ix] * p.u[d] + g.y[iy] * p.v[d]);
    text += " Decoded code z = " + codeText(z, 8) + ".";
  }
  src.appendChild(document.createTextNode(text));
}
function setCursor(x, y) {
  state.cursor = { x: x, y: y };
  updateTile();
}
function showPoint() {
  const i = state.hover >= 0 ? state.hover : state.selected;
  const info = $("point-info");
  if (i < 0) {
    blankCanvas($("point-image"), W * THUMB, H * THUMB);
    blankCanvas($("point-recon"), W * THUMB, H * THUMB);
    $("point-heading").textContent = "Test point";
    info.textContent = "Hover over a point, or click one to keep it.";
    return;
  }
  if (i < THUMBS) {
    drawSprite($("point-image"), sheets.images, i, THUMB);
    drawSprite($("point-recon"), sheets.recons, i, THUMB);
  } else {  // beyond the page's thumbnail budget: coordinates only
    blankCanvas($("point-image"), W * THUMB, H * THUMB);
    blankCanvas($("point-recon"), W * THUMB, H * THUMB);
  }
  $("point-heading").textContent = i === state.selected && state.hover < 0
    ? "Test point (clicked)" : "Test point (hover)";
  info.textContent = "";
  const line = (t) => {
    const d = document.createElement("div");
    d.textContent = t;
    info.appendChild(d);
  };
  line("#" + testIndex[i] + " of the test split \u00b7 " + CLASSES[labels[i]] +
    " (class " + labels[i] + ")");
  line("posterior mean \u03bc = " + codeText(means.subarray(i * D, i * D + D), 8));
  if (i >= THUMBS) {
    line("No image embedded for this point: the page holds images of " +
      THUMBS.toLocaleString("en-US") + " of its " + N.toLocaleString("en-US") + " points.");
  }
}
// The nearest visible point within `radius` px; one that carries images wins over one that does
// not (when only some do), so that hovering finds the images there are.
function nearestPoint(sx, sy, radius) {
  const withImage = nearestAmong(sx, sy, radius, THUMBS);
  return withImage >= 0 ? withImage : nearestAmong(sx, sy, radius, N);
}
function nearestAmong(sx, sy, radius, count) {
  const xy = state.xy;
  let best = -1, bestD = radius * radius;
  for (let i = 0; i < count; i++) {
    if (hidden.has(labels[i])) continue;
    const dx = toScreenX(xy[2 * i]) - sx, dy = toScreenY(xy[2 * i + 1]) - sy, d = dx * dx + dy * dy;
    if (d <= bestD) { bestD = d; best = i; }
  }
  return best;
}
function setPlane(id) {
  const p = DATA.planes.find((q) => q.id === id);
  if (!p) throw new Error("no plane " + id);
  state.plane = p;
  state.xy = project(p);
  for (const input of document.querySelectorAll('#plane-choice input')) {
    input.checked = input.value === id;
  }
  layout();
  fitView();
  const g = p.grids.posterior;  // start at the middle of where the data lives
  const cy = p.y_kind === "class" ? (CLASSES.length - 1) / 2 : (g.y[0] + g.y[g.y.length - 1]) / 2;
  setCursor((g.x[0] + g.x[g.x.length - 1]) / 2, cy);
  $("plane-note").textContent = "Plane: " + p.name + ". " + p.note;
  draw();
}

function buildControls() {
  const planes = $("plane-choice");
  for (const p of DATA.planes) {
    const label = document.createElement("label"), input = document.createElement("input");
    input.type = "radio"; input.name = "plane"; input.value = p.id;
    input.addEventListener("change", () => setPlane(p.id));
    label.appendChild(input); label.appendChild(document.createTextNode(" " + p.name));
    planes.appendChild(label);
  }
  if (DATA.planes.length === 1) {  // nothing to choose: say which plane it is
    planes.querySelector("input").hidden = true;
  }
  for (const input of document.querySelectorAll('#grid-choice input')) {
    input.addEventListener("change", () => { state.gridMode = input.value; updateTile(); draw(); });
  }
  $("reset-view").addEventListener("click", () => { fitView(); draw(); });
  $("fit-prior").addEventListener("click", () => {
    fitView("prior");
    state.userView = true;
    draw();
  });
  const legend = $("legend"), counts = CLASSES.map(() => 0);
  for (let i = 0; i < N; i++) counts[labels[i]]++;
  CLASSES.forEach((name, c) => {
    const li = document.createElement("li"), b = document.createElement("button");
    b.type = "button"; b.title = "show or hide this class";
    const sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = classColour(c);
    const cnt = document.createElement("span");
    cnt.className = "count"; cnt.textContent = counts[c];
    b.appendChild(sw); b.appendChild(document.createTextNode(name)); b.appendChild(cnt);
    b.addEventListener("click", () => {
      if (hidden.has(c)) hidden.delete(c); else hidden.add(c);
      b.classList.toggle("off", hidden.has(c));
      draw();
    });
    li.appendChild(b); legend.appendChild(li);
  });
  const boxes = $("box-legend");
  const marks = [["solid", "posterior grid"], ["dashed", "prior grid"],
    ["cell", "grid point shown"]];
  if (THUMBS < N) marks.push(["ring", "point with images"]);
  for (const [cls, text] of marks) {
    const li = document.createElement("li"), s = document.createElement("span");
    s.className = "box " + cls; li.appendChild(s); li.appendChild(document.createTextNode(text));
    boxes.appendChild(li);
  }
}
function bindPointer() {
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    canvas.setPointerCapture(e.pointerId);
    state.drag = { x: e.clientX, y: e.clientY, cx: state.view.cx, cy: state.view.cy, moved: false };
  });
  canvas.addEventListener("pointermove", (e) => {
    const [sx, sy] = localXY(canvas, e), d = state.drag;
    if (d && (d.moved || Math.abs(e.clientX - d.x) + Math.abs(e.clientY - d.y) > 3)) {
      d.moved = true;
      state.view.cx = d.cx - (e.clientX - d.x) / state.view.kx;
      state.view.cy = d.cy + (e.clientY - d.y) / state.view.ky;
      state.userView = true;
      draw();
      return;
    }
    const r = rect();
    if (sx < r.x || sx > r.x + r.w || sy < r.y || sy > r.y + r.h) return;
    const [x, y] = toLatent(sx, sy);
    setCursor(x, y);
    state.hover = nearestPoint(sx, sy, 7);
    showPoint();
    draw();
  });
  canvas.addEventListener("pointerup", (e) => {
    const d = state.drag;
    state.drag = null;
    if (!d || d.moved) return;
    const [sx, sy] = localXY(canvas, e), i = nearestPoint(sx, sy, 8);
    if (i >= 0) { state.selected = i; state.hover = -1; showPoint(); draw(); }
  });
  canvas.addEventListener("pointerleave", () => { state.hover = -1; showPoint(); draw(); });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [sx, sy] = localXY(canvas, e), [lx, ly] = toLatent(sx, sy), r = rect();
    const f = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
    state.view.kx *= f; state.view.ky *= f;  // zoom about the point under the mouse
    state.view.cx = lx - (sx - r.x - r.w / 2) / state.view.kx;
    state.view.cy = ly + (sy - r.y - r.h / 2) / state.view.ky;
    state.userView = true;
    draw();
  }, { passive: false });
  canvas.addEventListener("dblclick", () => { fitView(); draw(); });
  canvas.addEventListener("keydown", (e) => {
    const steps = ARROWS[e.key];
    if (!steps || !state.tile) return;
    e.preventDefault();
    const g = state.plane.grids[state.tile.grid];
    const ix = Math.min(g.x.length - 1, Math.max(0, state.tile.ix + steps[0]));
    const iy = Math.min(g.y.length - 1, Math.max(0, state.tile.iy + steps[1]));
    setCursor(g.x[ix], state.plane.y_kind === "class" ? state.cursor.y : g.y[iy]);
    draw();
  });
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      layout();
      if (!state.userView) fitView();
      draw();
    });
  });
}
function fillText() {
  $("title").textContent = DATA.title;
  const p = DATA.points;
  $("subtitle").textContent = "Latent-space explorer \u00b7 " +
    (DATA.tier_name ? DATA.tier_name + " \u00b7 " : "") +
    "latent size " + D + " \u00b7 test split: " + p.count.toLocaleString("en-US") + " of " +
    p.total.toLocaleString("en-US") + " points shown" + (THUMBS < N
      ? " (images for " + THUMBS.toLocaleString("en-US") + " of them)" : "");
  numbersInto($("numbers"), DATA.numbers);
  const notes = $("notes");
  const add = (t) => {
    const el = document.createElement("p");
    el.textContent = t;
    notes.appendChild(el);
  };
  add("Points: " + (p.count < p.total ? "a seeded random subset of " : "all ") +
    p.count.toLocaleString("en-US") +
    " test images' posterior means; " + (THUMBS < N ? "a random " + THUMBS.toLocaleString("en-US") +
    " of them (outlined) carry their test images and reconstructions" : "each carries its test " +
    "image and reconstruction") + " (the reconstruction is the decoded posterior mean).");
  const g = DATA.planes[0].grids;
  add("Decoded tiles come from precomputed grids, the nearest grid point to the cursor: " +
    g.posterior.note +
    "; " + g.prior.note + ". In auto mode the posterior grid is used inside its box, the " +
    "prior grid " +
    "inside its own, and outside both the nearer grid's edge point.");
  if (DATA.reference) {
    add("Reference code (for dimensions off the plane): " + DATA.reference.note + " = " +
      codeText(DATA.reference.code, 16) + ".");
  }
  add("Images: lossless PNG, uint8 = round(255 \u00b7 mean image), shown " + SCALE +
    "\u00d7 with nearest-neighbour " +
    "scaling. Built with " + DATA.build.decodes.toLocaleString("en-US") + " decodes in " +
    DATA.build.seconds + " s.");
}

function init() {
  fillText();
  buildControls();
  showPoint();
  blankCanvas($("tile"), W * SCALE, H * SCALE);  // the right size before the images arrive
  layout();
  ctx.fillStyle = "#5b6573"; ctx.font = FONT; ctx.textAlign = "center";
  ctx.fillText("Loading images\u2026", cssW / 2, cssH / 2);
  const loads = [loadSprite(DATA.points.images).then((s) => { sheets.images = s; }),
    loadSprite(DATA.points.recons).then((s) => { sheets.recons = s; })];
  for (const p of DATA.planes) {
    for (const kind of ["posterior", "prior"]) {
      loads.push(loadSprite(p.grids[kind].sprite).then((s) => { sheets[p.id + "/" + kind] = s; }));
    }
  }
  bindPointer();
  return Promise.all(loads).then(() => {
    setPlane(DATA.default_plane);
    showPoint();
    window.explorer.ready = true;
    document.documentElement.dataset.ready = "true";
  });
}

window.explorer = {
  ready: false,
  data: DATA,
  tileCanvas: $("tile"),
  tileScale: SCALE,
  pointImageCanvas: $("point-image"),
  pointReconCanvas: $("point-recon"),
  thumbScale: THUMB,
  planes: () => DATA.planes.map((p) => p.id),
  plane: () => state.plane.id,
  setPlane: (id) => { setPlane(id); return state.plane.id; },
  setGridMode: (m) => {
    if (!["auto", "posterior", "prior"].includes(m)) throw new Error("grid mode " + m);
    state.gridMode = m;
    for (const input of document.querySelectorAll('#grid-choice input')) {
      input.checked = input.value === m;
    }
    updateTile(); draw();
    return m;
  },
  setCursor: (x, y) => { setCursor(x, y); draw(); return Object.assign({}, state.tile); },
  tile: () => Object.assign({}, state.tile),
  pointCount: () => state.drawn,
  clickPoint: (i) => {
    if (!(i >= 0 && i < N)) throw new Error("no point " + i);
    state.selected = i; state.hover = -1; showPoint(); draw();
    return window.explorer.selectedPoint();
  },
  selectedPoint: () => {
    const i = state.hover >= 0 ? state.hover : state.selected;
    if (i < 0) return null;
    return { point: i, testIndex: testIndex[i], label: labels[i], className: CLASSES[labels[i]],
      hasImage: i < THUMBS };
  },
  pointClientXY: (i) => {
    const b = canvas.getBoundingClientRect();
    return [b.left + toScreenX(state.xy[2 * i]), b.top + toScreenY(state.xy[2 * i + 1])];
  },
  resetView: () => { fitView(); draw(); },
};
init().catch((err) => { console.error("explorer failed to start:", err); });
