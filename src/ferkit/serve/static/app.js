// ferkit live page: camera frames -> POST /v1/predict (raw JPEG bytes) -> boxes, labels, emotion chart.
// "face details" adds ?attributes= (age, gender, 68 landmarks, pose) and draws them; off by default.
// No build step, no external resources. The last result is in window.ferkitLast (tests read it); the overlay's
// data-details holds the age/gender lines drawn on it.
"use strict";
(function () {
  const qs = new URLSearchParams(location.search);
  const apiKey = qs.get("api_key");
  const headers = apiKey ? { "X-API-Key": apiKey } : {};
  const COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe"];
  const HISTORY = 120;
  const DETAILS = "age,gender,landmarks68,pose";
  const AXES = ["#f00", "#0f0", "#00f"];  // x (the face's own left), y (down its face), z (where it looks)
  const $ = (id) => document.getElementById(id);
  const video = $("video"), overlay = $("overlay"), chart = $("chart"), status = $("status");
  const grab = document.createElement("canvas");
  let stream = null, busy = false, timer = null, classes = [], history = [];
  let detailsOff = null;  // why the server gave no face details (then the page asks for none)
  window.ferkitLast = null;
  window.ferkitFrames = 0;

  function setStatus(text, faces) {
    status.textContent = text;
    if (faces !== undefined) status.dataset.faces = String(faces);
  }

  async function post(blob, query) {
    const r = await fetch("/v1/predict" + query, { method: "POST", body: blob, headers: Object.assign({ "Content-Type": blob.type || "image/jpeg" }, headers) });
    let body = null;
    try { body = await r.json(); } catch (e) { body = { reason: "HTTP " + r.status }; }
    return [r, body];
  }

  async function predictBlob(blob) {
    const t0 = performance.now();
    const details = $("details").checked && !detailsOff;
    let r = null, body = null;
    if (details) {
      try { [r, body] = await post(blob, "?attributes=" + DETAILS); } catch (e) { body = { reason: e.message }; }
    }
    if (!r || !r.ok) {
      if (details) {
        // a server without the attribute models: the page goes on without details and says why
        detailsOff = body.reason || ("HTTP " + r.status);
        $("details-note").textContent = "face details unavailable: " + detailsOff;
      }
      [r, body] = await post(blob, "");
    }
    if (!r.ok) throw new Error(body.reason || ("HTTP " + r.status));
    body._ms = performance.now() - t0;
    return body;
  }

  // the head rotation's axes in camera coordinates (x right, y down, z ahead) from yaw/pitch/roll in degrees:
  // the same construction and conventions as ferkit.attributes.pose_axes (yaw > 0: turned to its own left)
  function poseAxes(yaw, pitch, roll) {
    const d = Math.PI / 180, y = yaw * d, p = pitch * d, cr = Math.cos(roll * d), sr = Math.sin(roll * d);
    const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
    const fwd = [Math.sin(y) * Math.cos(p), -Math.sin(p), -Math.cos(y) * Math.cos(p)];
    const e1 = [Math.cos(y), 0, Math.sin(y)], e2 = cross(e1, fwd);
    const t = Math.atan2(-(e1[1] * cr - e1[0] * sr), e2[1] * cr - e2[0] * sr);
    let right = e1.map((v, i) => Math.cos(t) * v + Math.sin(t) * e2[i]);
    if (right[0] * cr + right[1] * sr < 0) right = right.map((v) => -v);
    return [right, cross(right, fwd), fwd];
  }

  function ageGender(f) {
    const parts = [];
    if (f.age !== undefined && f.age !== null) parts.push(String(Math.round(f.age)));
    if (f.gender) parts.push(f.gender[0].toUpperCase() + " " + f.gender_score.toFixed(2));
    return parts.join(" ");
  }

  function drawDetails(ctx, f, scale) {
    if (f.landmarks68) {
      ctx.fillStyle = "#0ff";
      for (const [x, y] of f.landmarks68) ctx.fillRect(x - 1.5 * scale, y - 1.5 * scale, 3 * scale, 3 * scale);
    }
    const nose = f.landmarks68 ? f.landmarks68[30] : (f.landmarks && !f.landmarks_estimated ? f.landmarks.nose : null);
    if (nose && [f.yaw, f.pitch, f.roll].every((v) => typeof v === "number")) {
      const len = 0.5 * (f.box[2] - f.box[0]);
      poseAxes(f.yaw, f.pitch, f.roll).forEach((a, i) => {
        ctx.strokeStyle = AXES[i];
        ctx.beginPath(); ctx.moveTo(nose[0], nose[1]); ctx.lineTo(nose[0] + len * a[0], nose[1] + len * a[1]); ctx.stroke();
      });
    }
  }

  function drawFaces(ctx, faces, scale) {
    ctx.lineWidth = Math.max(2, 2 * scale);
    ctx.font = Math.round(16 * scale) + "px sans-serif";
    const lines = [];
    for (const f of faces) {
      const [x1, y1, x2, y2] = f.box;
      const c = COLORS[Math.max(0, classes.indexOf(f.label)) % COLORS.length];
      ctx.strokeStyle = c;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const text = f.label + " " + Math.round(f.score * 100) + "%" + (f.identity ? " · " + (f.identity.name || f.identity.label || "") : "");
      const w = ctx.measureText(text).width + 8, h = 20 * scale;
      ctx.fillStyle = c;
      ctx.fillRect(x1, Math.max(0, y1 - h), w, h);
      ctx.fillStyle = "#000";
      ctx.fillText(text, x1 + 4, Math.max(0, y1 - h) + h - 5 * scale);
      const more = ageGender(f);
      if (more) {  // a second line under the label
        const top = Math.max(0, y1 - h) + h;
        ctx.fillStyle = c;
        ctx.fillRect(x1, top, ctx.measureText(more).width + 8, h);
        ctx.fillStyle = "#000";
        ctx.fillText(more, x1 + 4, top + h - 5 * scale);
        lines.push(more);
      }
      if (f.landmarks) {
        ctx.fillStyle = c;
        for (const k in f.landmarks) { const [lx, ly] = f.landmarks[k]; ctx.fillRect(lx - 2, ly - 2, 4, 4); }
      }
      ctx.lineWidth = Math.max(1, scale);
      drawDetails(ctx, f, scale);
      ctx.lineWidth = Math.max(2, 2 * scale);
    }
    ctx.canvas.dataset.details = lines.join("|");
  }

  function drawChart() {
    const ctx = chart.getContext("2d"), W = chart.width, H = chart.height;
    ctx.clearRect(0, 0, W, H);
    ctx.strokeStyle = "#333";
    for (let i = 0; i <= 4; i++) { ctx.beginPath(); ctx.moveTo(0, H * i / 4); ctx.lineTo(W, H * i / 4); ctx.stroke(); }
    if (!history.length) return;
    classes.forEach((c, ci) => {
      ctx.strokeStyle = COLORS[ci % COLORS.length];
      ctx.lineWidth = 2;
      ctx.beginPath();
      history.forEach((p, i) => {
        const x = (i / (HISTORY - 1)) * W, y = H - (p ? (p[c] || 0) : 0) * H;
        i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
      });
      ctx.stroke();
    });
  }

  function drawLegend() {
    $("legend").innerHTML = classes.map((c, i) => '<span style="color:' + COLORS[i % COLORS.length] + '">■ ' + c + "</span>").join("");
  }

  async function tick() {
    if (busy || !stream || video.readyState < 2 || !video.videoWidth) return;
    busy = true;
    try {
      grab.width = video.videoWidth; grab.height = video.videoHeight;
      grab.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((res) => grab.toBlob(res, "image/jpeg", 0.85));
      const result = await predictBlob(blob);
      window.ferkitLast = result;
      window.ferkitFrames += 1;
      overlay.width = grab.width; overlay.height = grab.height;
      const ctx = overlay.getContext("2d");
      ctx.clearRect(0, 0, overlay.width, overlay.height);
      drawFaces(ctx, result.faces, Math.max(1, grab.width / 640));
      const top = result.faces[0];
      if (top && !classes.length) { classes = Object.keys(top.probabilities); drawLegend(); }
      history.push(top ? top.probabilities : null);
      if (history.length > HISTORY) history.shift();
      drawChart();
      $("last-label").textContent = top ? top.label : "no face";
      $("latency").textContent = Math.round(result._ms) + " ms";
      setStatus(result.faces.length + " face(s)", result.faces.length);
    } catch (e) {
      setStatus("error: " + e.message);
    } finally {
      busy = false;
    }
  }

  async function startCamera() {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
      video.srcObject = stream;
      setStatus("camera on", 0);
      $("camera-toggle").textContent = "Stop camera";
      const every = () => Math.max(100, parseInt($("interval").value, 10) || 300);
      const loop = () => { tick(); timer = setTimeout(loop, every()); };
      loop();
    } catch (e) {
      setStatus("no camera (" + e.name + "): drop photos instead");
    }
  }

  function stopCamera() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    clearTimeout(timer);
    $("camera-toggle").textContent = "Start camera";
    setStatus("camera off");
  }

  $("camera-toggle").addEventListener("click", () => (stream ? stopCamera() : startCamera()));
  $("details").addEventListener("change", () => { detailsOff = null; $("details-note").textContent = ""; });

  async function handleFiles(files) {
    for (const file of files) {
      const out = document.createElement("div");
      $("photo-results").prepend(out);
      try {
        const result = await predictBlob(file);
        const img = await createImageBitmap(file);
        const cv = document.createElement("canvas");
        cv.width = img.width; cv.height = img.height;
        const ctx = cv.getContext("2d");
        ctx.drawImage(img, 0, 0);
        if (!classes.length && result.faces[0]) { classes = Object.keys(result.faces[0].probabilities); drawLegend(); }
        drawFaces(ctx, result.faces, Math.max(1, img.width / 640));
        out.textContent = file.name + ": " + (result.faces.map((f) => f.label).join(", ") || "no face");
        out.appendChild(cv);
      } catch (e) {
        out.textContent = file.name + ": " + e.message;
      }
    }
  }

  const dz = $("dropzone");
  dz.addEventListener("dragover", (e) => { e.preventDefault(); dz.classList.add("over"); });
  dz.addEventListener("dragleave", () => dz.classList.remove("over"));
  dz.addEventListener("drop", (e) => { e.preventDefault(); dz.classList.remove("over"); handleFiles(e.dataTransfer.files); });
  $("file-input").addEventListener("change", (e) => handleFiles(e.target.files));

  fetch("/v1/models", { headers }).then((r) => r.json()).then((m) => { if (m.classes) { classes = m.classes; drawLegend(); } }).catch(() => {});
  drawChart();
  startCamera();
})();
