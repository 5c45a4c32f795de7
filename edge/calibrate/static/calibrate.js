// The calibration page: draws the still with the proposal and the current calibration, lets the installer
// drag, add and type points, mark roof, ends and mask polygons, and saves. Plain JavaScript, no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const canvas = $("#view");
const ctx = canvas.getContext("2d");
const still = new Image();

const S = {
  size: [canvas.width, canvas.height],
  proposal: null,     // {facade, floors}
  facade: null,       // the calibration being edited: {floor_height_m, ground_floor, points, top_floor?, extent_m?}
  masks: { shield: [], privacy: [] },  // polygons in 0..1 coordinates
  overlay: null,      // {floors, roof, extent, image_to_facade} from the server for `facade`
  errors: null,       // reprojection error per point, px
  mode: "move",
  drag: null,         // index of the point being dragged
  draft: [],          // polygon being drawn, pixels
  pending: null,      // pixel tapped in "add" mode
  tracks: [],         // from the last replay: {points, floor, fall}
  periodFactor: 1,    // the installer's fix when the proposal drew two lines per floor (2) or one per two (0.5)
  placed: [],         // proposal points the installer dragged: {index, image}; the grid is re-fitted to them
  fromProposal: false,  // the points are the accepted proposal's (re-fitted), not yet edited one by one
  refitting: false,   // a re-fit is on its way
  marks: [],          // floor lines the installer marked: {image, floor}; two floors give the storeys
  showProposal: true, // dashed proposal lines: until accepted, and again after Propose
};
window.calib = S;     // for people (and tests) who want to look inside

const HELP = {
  move: "按住圆点拖到正确位置。Press and drag a numbered point onto the right place.",
  add: "点击外墙上已知位置的点, 再输入它的沿墙和离地米数。Tap a facade point you know, then type its metres.",
  roof: "点击屋顶线 (最高一层的顶)。Tap the roof line (top of the highest floor).",
  left: "点击外墙左端 (有窗的部分)。Tap the left end of the windowed facade.",
  right: "点击外墙右端。Tap the right end of the windowed facade.",
  shield: "逐点点击围出屏蔽区 (树、道路、旗杆), 再点“完成”。Tap the corners of an area to ignore, then Finish.",
  mark: "点击一条楼层线 (楼板), 输入它是第几层的地面; 再标一条别的楼层。Tap a floor line (a slab), type which floor's bottom it is; then one on another floor.",
  privacy: "逐点点击围出隐私区 (需要打码的窗), 再点“完成”。Tap the corners of an area to blur, then Finish.",
};

function status(text, kind) {
  const el = $("#status");
  el.textContent = text;
  el.className = kind || "";
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = { ok: false, message: `${r.status} ${r.statusText}` }; }
  if (!r.ok && data && data.detail) data = { ok: false, message: typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail) };
  return data;
}

// ---- geometry -------------------------------------------------------------------------------------------
function apply(h, x, y) {
  const w = h[2][0] * x + h[2][1] * y + h[2][2];
  return [(h[0][0] * x + h[0][1] * y + h[0][2]) / w, (h[1][0] * x + h[1][1] * y + h[1][2]) / w];
}
function toFacade(px) {
  return S.overlay ? apply(S.overlay.image_to_facade, px[0], px[1]) : null;
}
function eventPixel(ev) {
  const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
}
function scale() {  // image pixels per CSS pixel: keeps lines and handles the same size on any screen
  return canvas.width / canvas.getBoundingClientRect().width;
}

// ---- drawing --------------------------------------------------------------------------------------------
function line(a, b, colour, width, dash) {
  ctx.save();
  ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.setLineDash(dash || []);
  ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
  ctx.restore();
}
function label(text, at, colour, k) {
  ctx.save();
  ctx.font = `${Math.round(13 * k)}px sans-serif`;
  ctx.lineWidth = 3 * k; ctx.strokeStyle = "rgba(0,0,0,.8)"; ctx.fillStyle = colour;
  ctx.strokeText(text, at[0], at[1]); ctx.fillText(text, at[0], at[1]);
  ctx.restore();
}
function floorLines(floors, colour, k, dash) {
  for (const f of floors) {
    line(f.a, f.b, colour, 2 * k, dash);
    const left = f.a[0] <= f.b[0] ? f.a : f.b;
    label(`${f.floor}F`, [left[0] + 4 * k, left[1] - 4 * k], colour, k);
  }
}
function polygon(points, colour, closed, k) {
  if (!points.length) return;
  ctx.save();
  ctx.strokeStyle = colour; ctx.fillStyle = colour + "44"; ctx.lineWidth = 2 * k;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1])));
  if (closed) { ctx.closePath(); ctx.fill(); }
  ctx.stroke();
  ctx.restore();
}
function draw() {
  const k = scale();
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (still.complete) ctx.drawImage(still, 0, 0, canvas.width, canvas.height);
  const [w, h] = S.size;
  for (const [kind, colour] of [["shield", "#34c759"], ["privacy", "#af52de"]]) {
    for (const poly of S.masks[kind]) polygon(poly.map(([x, y]) => [x * w, y * h]), colour, true, k);
  }
  if (S.draft.length) polygon(S.draft, S.mode === "privacy" ? "#af52de" : "#34c759", false, k);
  if (S.showProposal && S.proposal && S.proposal.floors) {
    floorLines(S.proposal.floors, "#ffd400", k, [10 * k, 6 * k]);
    const roof = S.proposal.roof;
    if (roof) { line(roof.a, roof.b, "#ff3b30", 3 * k, [10 * k, 6 * k]); label(`屋顶 roof ${roof.floor}F`, [roof.a[0] + 4 * k, roof.a[1] - 6 * k], "#ff3b30", k); }
  }
  if (S.overlay) {
    floorLines(S.overlay.floors, "#00d0ff", k);
    if (S.overlay.roof) line(S.overlay.roof.a, S.overlay.roof.b, "#ff3b30", 3 * k);
    for (const e of S.overlay.extent) line(e.a, e.b, "#ff9500", 3 * k, [6 * k, 4 * k]);
  }
  for (const t of S.tracks) {
    const colour = t.fall ? "#ff3b30" : "#ffffff";
    polygon(t.points, colour, false, k * (t.fall ? 1.5 : 0.75));
    if (t.floor !== null) label(`${t.floor}F`, [t.points[0][0] + 6 * k, t.points[0][1] - 6 * k], colour, k);
  }
  const pts = S.facade ? S.facade.points : [];
  pts.forEach((p, i) => {
    ctx.save();
    ctx.fillStyle = S.drag === i ? "#ff3b30" : "#00d0ff";
    ctx.strokeStyle = "#000"; ctx.lineWidth = 2 * k;
    ctx.beginPath(); ctx.arc(p.image[0], p.image[1], 9 * k, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    ctx.restore();
    label(String(i + 1), [p.image[0] + 11 * k, p.image[1] + 5 * k], "#fff", k);
  });
  for (const m of S.marks) {
    ctx.fillStyle = "#ff9500"; ctx.beginPath(); ctx.arc(m.image[0], m.image[1], 6 * k, 0, 7); ctx.fill();
    label(`${m.floor}F`, [m.image[0] + 8 * k, m.image[1] - 6 * k], "#ff9500", k);
  }
  if (S.pending) { ctx.fillStyle = "#ff9500"; ctx.beginPath(); ctx.arc(S.pending[0], S.pending[1], 7 * k, 0, 7); ctx.fill(); }
}

// ---- the tables -----------------------------------------------------------------------------------------
function renderTables() {
  const body = $("#points tbody");
  body.innerHTML = "";
  const pts = S.facade ? S.facade.points : [];
  pts.forEach((p, i) => {
    const tr = document.createElement("tr");
    const err = S.errors ? S.errors[i] : null;
    tr.innerHTML = `<td>${i + 1}</td><td>${p.image[0].toFixed(0)}, ${p.image[1].toFixed(0)}</td>` +
      `<td><input type="number" step="0.01" data-i="${i}" data-c="0" value="${p.facade[0]}"></td>` +
      `<td><input type="number" step="0.01" data-i="${i}" data-c="1" value="${p.facade[1]}"></td>` +
      `<td class="${err !== null && err > 3 ? "err-high" : ""}">${err === null ? "–" : err.toFixed(1)}</td>` +
      `<td><button type="button" data-del="${i}" aria-label="delete point ${i + 1}">删 ✕</button></td>`;
    body.appendChild(tr);
  });
  body.querySelectorAll("input").forEach((el) => el.addEventListener("change", () => {
    const v = parseFloat(el.value);
    if (Number.isFinite(v)) { S.facade.points[+el.dataset.i].facade[+el.dataset.c] = v; S.fromProposal = false; recheck(); }
  }));
  body.querySelectorAll("button[data-del]").forEach((el) => el.addEventListener("click", () => {
    S.facade.points.splice(+el.dataset.del, 1); S.fromProposal = false; recheck();
  }));
  const list = $("#masks");
  list.innerHTML = "";
  for (const kind of ["shield", "privacy"]) {
    S.masks[kind].forEach((poly, i) => {
      const li = document.createElement("li");
      li.innerHTML = `${kind === "shield" ? "屏蔽区 shield" : "隐私区 privacy"} ${i + 1}: ${poly.length} 点 points ` +
        `<button type="button">删 ✕</button>`;
      li.querySelector("button").addEventListener("click", () => { S.masks[kind].splice(i, 1); recheck(); });
      list.appendChild(li);
    });
  }
  $("#top-floor").value = S.facade && S.facade.top_floor != null ? S.facade.top_floor : "";
  const ext = S.facade && S.facade.extent_m ? S.facade.extent_m : null;
  $("#extent-a").value = ext ? ext[0] : "";
  $("#extent-b").value = ext ? ext[1] : "";
}

// ---- talking to the node --------------------------------------------------------------------------------
function body() {
  return { facade: S.facade, masks: S.masks };
}
let checking = 0;
async function recheck() {
  renderTables();
  draw();
  if (!S.facade) return;
  const ticket = ++checking;
  const r = await api("/api/check", body());
  if (ticket !== checking) return;  // a newer edit is on its way
  S.overlay = r.ok ? r.overlay : null;
  S.errors = r.ok ? r.errors : null;
  if (r.ok) {
    const worst = Math.max(...r.errors);
    const four = r.errors.length === 4 ? " 4 个点时误差总是 0, 加第 5 个点才能检验。With 4 points the error is always 0: add a 5th to check." : "";
    status(`楼层线应落在真实楼板上。Floor lines should sit on the real floors. 最大误差 worst point error ${worst.toFixed(1)} px.${four} ${whereCamera(r.camera)}`, worst > 3 ? "" : "good");
  } else {
    status(`不能保存 Cannot save: ${r.message}`, "bad");
  }
  renderTables();
  draw();
}
function whereCamera(camera) {
  // Origins are brought out from the wall along the camera's view: a wrong place here means wrong floors.
  if (!camera) return "推算不出相机位置 (透视不足, 或位置不合理: 请检查标定点): 起点楼层按墙面计算。The calibration cannot place the camera (too little perspective, or an implausible place: check the points): origin floors are taken on the wall.";
  return `按此标定, 相机距楼面 ${camera.distance_m} m, 高 ${camera.up_m} m, 横向 ${camera.along_m} m; 与实际不符时请检查标定点。This calibration places the camera ${camera.distance_m} m from the facade, ${camera.up_m} m up, ${camera.along_m} m along it; if that is not where it stands, check the points.`;
}
function answers() {
  const bay = parseFloat($("#bay-width").value);
  const lowest = parseInt($("#lowest-floor").value, 10);  // 0 is a floor (a ground floor numbered 0)
  return {
    floor_height_m: parseFloat($("#floor-height").value) || 3.0,
    lowest_floor: Number.isFinite(lowest) ? lowest : 1,
    bay_width_m: Number.isFinite(bay) ? bay : null,
    period_factor: S.periodFactor,
    placed: S.placed,
    marks: S.marks,
  };
}
function showProposal(p) {
  S.proposal = p;
  if (p.ok) {
    const roof = p.roof ? ` 屋顶在 ${p.roof.floor} 层之上 (红色虚线)。Roof above floor ${p.roof.floor} (dashed red).` : " 没有看到屋顶。No roof seen.";
    $("#proposal-note").textContent = `找到 ${p.floors.length} 条楼层线 (规律性 ${p.strength}); 黄色虚线。Found ${p.floors.length} floor lines (repeat ${p.strength}), dashed yellow.${roof}`;
    if (p.weak) {
      $("#proposal-note").textContent = `低把握的猜测, 请逐条核对。A low-confidence guess, check every line: ${p.weak}`;
    }
    $("#proposal-note").className = p.weak ? "note weak" : "note";
    $("#btn-accept").disabled = false;
    if (p.lowest_floor != null) $("#lowest-floor").value = p.lowest_floor;
  } else if (p.can_mark) {
    $("#proposal-note").textContent = `没有找到楼层: 用“标楼层线”标两条不同楼层的楼层线。No storeys found: mark two floor lines of different floors (Floor line). ${p.message}`;
    $("#proposal-note").className = "note weak";
    $("#btn-accept").disabled = true;
  } else {
    $("#proposal-note").textContent = `没有建议 No proposal: ${p.message}. 请手动加点 Add points by hand.`;
    $("#btn-accept").disabled = true;
  }
  draw();
}
async function propose() {
  S.showProposal = true;
  S.placed = [];
  showProposal(await api("/api/propose", answers()));
  if (S.facade) status("建议已更新; 点“采用建议”替换当前标定。Proposal updated: Accept it to replace the current calibration.");
}
function accept() {
  if (!S.proposal || !S.proposal.ok) return;
  S.showProposal = false;
  const keep = S.facade || {};
  S.facade = JSON.parse(JSON.stringify(S.proposal.facade));
  if (keep.top_floor != null && !S.placed.length) S.facade.top_floor = keep.top_floor;
  if (keep.extent_m) S.facade.extent_m = keep.extent_m;
  S.fromProposal = true;
  recheck();
}
// A dragged proposal point re-fits the storey height (or the lowest line) of the whole grid: every line
// follows the one the installer put right, as one correction, instead of one corner of a skewed fit.
async function refit(index) {
  S.placed = S.placed.filter((p) => p.index !== index).concat([{ index, image: S.facade.points[index].image }]);
  const roof = S.facade.top_floor, ext = S.facade.extent_m;
  S.refitting = true;
  const r = await api("/api/propose", answers()).finally(() => { S.refitting = false; });
  if (!r.ok) {
    S.placed = S.placed.filter((p) => p.index !== index);
    S.fromProposal = false;
    status(`只移动了这个点 Moved this point only: ${r.message}`, "bad");
    return recheck();
  }
  S.proposal = r;
  S.facade = JSON.parse(JSON.stringify(r.facade));
  if (roof != null && r.facade.top_floor == null) S.facade.top_floor = roof;
  if (ext) S.facade.extent_m = ext;
  return recheck();
}
async function save() {
  if (!S.facade) { status("还没有标定: 先采用建议或加点。Nothing to save: accept the proposal or add points.", "bad"); return; }
  status("保存中 Saving…");
  const r = await api("/api/save", body());
  // Saved, but without its reference still: said in red, as it needs another save.
  status(r.ok ? r.message : `未保存 Not saved: ${r.message}`, r.ok && !r.reference_error ? "good" : "bad");
}

async function replay() {
  if (!S.facade) { status("先要有标定。Needs a calibration first.", "bad"); return; }
  const first = await api("/api/replay", body());
  if (first.ok === false) { status(`不能回放 Cannot replay: ${first.message}`, "bad"); return; }
  $("#btn-replay").disabled = true;
  for (;;) {
    const r = await api("/api/replay");
    if (r.state === "running") {
      $("#replay-note").textContent = `回放中 Replaying… ${r.frames}${r.total ? " / " + r.total : ""} 帧 frames`;
      await new Promise((ok) => setTimeout(ok, 1000));
      continue;
    }
    $("#btn-replay").disabled = false;
    if (r.state === "done") {
      S.tracks = r.tracks;
      const falls = r.tracks.filter((t) => t.fall).length;
      const when = r.message ? ` (${r.message})` : "";
      $("#replay-note").textContent = `${r.frames} 帧, ${r.tracks.length} 条轨迹, ${falls} 次抛物。${r.frames} frames${when}, ${r.tracks.length} tracks, ${falls} decided falls.`;
      document.body.dataset.replayed = "1";
    } else {
      $("#replay-note").textContent = `回放失败 Replay failed: ${r.message}`;
    }
    draw();
    return;
  }
}

// ---- pointer handling -----------------------------------------------------------------------------------
function nearestPoint(px) {
  if (!S.facade) return null;
  const reach = 24 * scale();
  let best = null, bestD = reach;
  S.facade.points.forEach((p, i) => {
    const d = Math.hypot(p.image[0] - px[0], p.image[1] - px[1]);
    if (d < bestD) { best = i; bestD = d; }
  });
  return best;
}
function floorAt(heightM) {
  return S.facade.ground_floor + Math.round(heightM / S.facade.floor_height_m) - 1;
}
canvas.addEventListener("pointerdown", (ev) => {
  const px = eventPixel(ev);
  if (S.mode === "move") {
    const i = nearestPoint(px);
    if (i !== null) { S.drag = i; canvas.setPointerCapture(ev.pointerId); draw(); }
    return;
  }
  if (S.mode === "add") { S.pending = px; $("#add-form").hidden = false; $("#add-x").focus(); draw(); return; }
  if (S.mode === "mark") { S.pending = px; $("#mark-form").hidden = false; $("#mark-floor").focus(); draw(); return; }
  if (S.mode === "shield" || S.mode === "privacy") { S.draft.push(px); draw(); return; }
  const fac = toFacade(px);
  if (!fac) { status("先要有标定 (4 点) 才能标屋顶和两端。Needs a calibration (4 points) first.", "bad"); return; }
  if (S.mode === "roof") S.facade.top_floor = Math.max(1, floorAt(fac[1]));
  if (S.mode === "left" || S.mode === "right") {
    const ext = S.facade.extent_m ? S.facade.extent_m.slice() : [fac[0], fac[0]];
    ext[S.mode === "left" ? 0 : 1] = Math.round(fac[0] * 10) / 10;
    S.facade.extent_m = [Math.min(ext[0], ext[1]), Math.max(ext[0], ext[1])];
  }
  recheck();
});
canvas.addEventListener("pointermove", (ev) => {
  if (S.drag === null) return;
  const [x, y] = eventPixel(ev);
  S.facade.points[S.drag].image = [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  draw();
});
function endDrag() {
  if (S.drag === null) return;
  const i = S.drag;
  S.drag = null;
  if (S.fromProposal && $("#refit").checked && i < 4) return refit(i);
  S.fromProposal = false;
  recheck();
}
canvas.addEventListener("pointerup", endDrag);
canvas.addEventListener("pointercancel", endDrag);

function setMode(mode) {
  S.mode = mode; S.draft = []; S.pending = null;
  document.querySelectorAll("#modes button[data-mode]").forEach((b) => b.classList.toggle("on", b.dataset.mode === mode));
  $("#mode-help").textContent = HELP[mode];
  $("#poly-tools").hidden = !(mode === "shield" || mode === "privacy");
  $("#add-form").hidden = true;
  $("#mark-form").hidden = true;
  draw();
}
document.querySelectorAll("#modes button[data-mode]").forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));
$("#btn-poly-done").addEventListener("click", () => {
  if (S.draft.length < 3) { status("多边形至少 3 个点。A polygon needs at least 3 corners.", "bad"); return; }
  const [w, h] = S.size;
  const clamp = (v) => Math.min(1, Math.max(0, Math.round(v * 10000) / 10000));
  S.masks[S.mode].push(S.draft.map(([x, y]) => [clamp(x / w), clamp(y / h)]));
  S.draft = [];
  recheck();
});
$("#btn-poly-undo").addEventListener("click", () => { S.draft.pop(); draw(); });
$("#btn-add-ok").addEventListener("click", () => {
  const x = parseFloat($("#add-x").value), y = parseFloat($("#add-y").value);
  if (!S.pending || !Number.isFinite(x) || !Number.isFinite(y)) { status("请输入两个米数。Type both metres.", "bad"); return; }
  if (!S.facade) S.facade = { floor_height_m: answers().floor_height_m, ground_floor: 1, points: [] };
  S.fromProposal = false;
  S.facade.points.push({ image: [Math.round(S.pending[0] * 10) / 10, Math.round(S.pending[1] * 10) / 10], facade: [x, y] });
  S.pending = null; $("#add-form").hidden = true; $("#add-x").value = ""; $("#add-y").value = "";
  recheck();
});
// A marked floor line is one correction: with two floors marked, the storeys follow from them.
$("#btn-mark-ok").addEventListener("click", async () => {
  const floor = parseInt($("#mark-floor").value, 10);
  if (!S.pending || !Number.isFinite(floor)) { status("请输入楼层号。Type the floor number.", "bad"); return; }
  S.marks.push({ image: [Math.round(S.pending[0] * 10) / 10, Math.round(S.pending[1] * 10) / 10], floor });
  S.pending = null; $("#mark-form").hidden = true; $("#mark-floor").value = "";
  draw();
  if (new Set(S.marks.map((m) => m.floor)).size < 2) {
    status("再标一条别的楼层的楼层线。Now mark a floor line of another floor.");
    return;
  }
  await propose();
  if (S.proposal && S.proposal.ok) status("请核对黄色线, 然后采用。Check the dashed yellow lines, then Accept them.");
  else status(`不能用这些标记 Cannot use these marks: ${S.proposal.message}`, "bad");
});
$("#btn-mark-clear").addEventListener("click", () => { S.marks = []; S.pending = null; $("#mark-form").hidden = true; propose(); });
$("#btn-add-cancel").addEventListener("click", () => { S.pending = null; $("#add-form").hidden = true; draw(); });
$("#top-floor").addEventListener("change", () => {
  if (!S.facade) return;
  const v = parseInt($("#top-floor").value, 10);
  if (Number.isFinite(v)) S.facade.top_floor = v; else delete S.facade.top_floor;
  recheck();
});
for (const id of ["#extent-a", "#extent-b"]) {
  $(id).addEventListener("change", () => {
    if (!S.facade) return;
    const a = parseFloat($("#extent-a").value), b = parseFloat($("#extent-b").value);
    if (Number.isFinite(a) && Number.isFinite(b)) S.facade.extent_m = [Math.min(a, b), Math.max(a, b)];
    else delete S.facade.extent_m;
    recheck();
  });
}
$("#floor-height").addEventListener("change", () => {
  if (S.facade) { S.facade.floor_height_m = parseFloat($("#floor-height").value) || 3.0; recheck(); }
});
$("#btn-propose").addEventListener("click", propose);
$("#btn-sparser").addEventListener("click", () => { S.periodFactor *= 2; propose(); });
$("#btn-denser").addEventListener("click", () => { S.periodFactor /= 2; propose(); });
$("#btn-accept").addEventListener("click", accept);
$("#btn-save").addEventListener("click", save);
$("#btn-replay").addEventListener("click", replay);
window.addEventListener("resize", draw);

// A live camera's minute fills from when the page opened: say how much a replay would show now.
async function bufferNote() {
  const b = await api("/api/buffer");
  if (!b.live) return;
  const el = $("#buffer-note");
  el.hidden = false;
  el.textContent = b.error
    ? `摄像机读取失败 Camera not readable: ${b.error}`
    : `已缓存 ${b.seconds.toFixed(0)} 秒 — ${b.seconds.toFixed(0)} s of the last minute kept for replay.`;
  el.dataset.seconds = b.seconds;
  setTimeout(bufferNote, 2000);
}

// ---- start ----------------------------------------------------------------------------------------------
async function start() {
  const st = await api("/api/state");
  if (st.ok === false) { status(st.message, "bad"); return; }
  S.size = st.size;
  S.masks = st.masks;
  $("#floor-height").value = st.answers.floor_height_m;
  still.onload = () => draw();
  still.src = "/still.jpg";
  showProposal(st.proposal);
  if (st.current) {
    S.facade = st.current;
    S.showProposal = false;  // the calibration in the config is what is checked; Propose shows the proposal
    await recheck();
    const el = $("#status");
    status(`显示配置中的当前标定 (蓝线)。Showing the calibration in the config (blue lines). ${el.textContent}`, el.className);
  } else {
    status(st.proposal.ok ? "请核对黄色建议线, 然后采用。Check the dashed yellow proposal, then Accept it." : "没有建议: 请手动加点。No proposal: add points by hand.", st.proposal.ok ? "" : "bad");
  }
  document.body.dataset.ready = "1";
  bufferNote();
}
start();
