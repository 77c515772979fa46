// ferkit live page: camera frames -> POST /v1/predict (raw JPEG bytes) -> boxes, labels, emotion chart.
// No build step, no external resources. The last result is in window.ferkitLast (tests read it).
"use strict";
(function () {
  const qs = new URLSearchParams(location.search);
  const apiKey = qs.get("api_key");
  const headers = apiKey ? { "X-API-Key": apiKey } : {};
  const COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe"];
  const HISTORY = 120;
  const $ = (id) => document.getElementById(id);
  const video = $("video"), overlay = $("overlay"), chart = $("chart"), status = $("status");
  const grab = document.createElement("canvas");
  let stream = null, busy = false, timer = null, classes = [], history = [];
  window.ferkitLast = null;
  window.ferkitFrames = 0;

  function setStatus(text, faces) {
    status.textContent = text;
    if (faces !== undefined) status.dataset.faces = String(faces);
  }

  async function predictBlob(blob) {
    const t0 = performance.now();
    const r = await fetch("/v1/predict", { method: "POST", body: blob, headers: Object.assign({ "Content-Type": blob.type || "image/jpeg" }, headers) });
    const body = await r.json();
    if (!r.ok) throw new Error(body.reason || ("HTTP " + r.status));
    body._ms = performance.now() - t0;
    return body;
  }

  function drawFaces(ctx, faces, scale) {
    ctx.lineWidth = Math.max(2, 2 * scale);
    ctx.font = Math.round(16 * scale) + "px sans-serif";
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
      if (f.landmarks) {
        ctx.fillStyle = c;
        for (const k in f.landmarks) { const [lx, ly] = f.landmarks[k]; ctx.fillRect(lx - 2, ly - 2, 4, 4); }
      }
    }
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
