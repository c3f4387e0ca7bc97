// Join page: camera/microphone preview with device pickers, then on to the meeting room.
// The chosen devices (and PIN) are handed over in sessionStorage: lienthong.cameraId,
// lienthong.micId, lienthong.pin.
"use strict";
(function () {
  const video = document.getElementById("preview");
  const camSel = document.getElementById("camera");
  const micSel = document.getElementById("microphone");
  const meter = document.getElementById("mic-level");
  const errorBox = document.getElementById("device-error");
  let stream = null;
  let audioCtx = null;
  window.lienthongJoin = { previewPlaying: false, devices: 0 };

  function showError(text) { errorBox.textContent = text; errorBox.hidden = false; }

  async function listDevices() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    window.lienthongJoin.devices = devices.length;
    for (const [sel, kind] of [[camSel, "videoinput"], [micSel, "audioinput"]]) {
      const current = sel.value;
      sel.innerHTML = "";
      devices.filter((d) => d.kind === kind).forEach((d, i) => {
        const o = document.createElement("option");
        o.value = d.deviceId;
        o.textContent = d.label || `${kind === "videoinput" ? "Camera" : "Micro"} ${i + 1}`;
        sel.appendChild(o);
      });
      if (current) sel.value = current;
    }
  }

  function levelMeter(s) {
    if (!window.AudioContext || s.getAudioTracks().length === 0) return;
    audioCtx = audioCtx || new AudioContext();
    const src = audioCtx.createMediaStreamSource(s);
    const analyser = audioCtx.createAnalyser();
    src.connect(analyser);
    const data = new Uint8Array(analyser.fftSize);
    (function tick() {
      analyser.getByteTimeDomainData(data);
      let peak = 0;
      for (const v of data) peak = Math.max(peak, Math.abs(v - 128) / 128);
      meter.value = peak;
      requestAnimationFrame(tick);
    })();
  }

  async function start() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    const constraints = {
      video: camSel.value ? { deviceId: { exact: camSel.value } } : true,
      audio: micSel.value ? { deviceId: { exact: micSel.value } } : true,
    };
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      showError(e.name === "NotAllowedError" ? window.JOIN_I18N.denied : window.JOIN_I18N.noDevice);
      return;
    }
    errorBox.hidden = true;
    video.srcObject = stream;
    video.onplaying = () => { window.lienthongJoin.previewPlaying = true; };
    await listDevices();
    levelMeter(stream);
  }

  camSel.addEventListener("change", start);
  micSel.addEventListener("change", start);
  document.getElementById("join").addEventListener("click", (ev) => {
    sessionStorage.setItem("lienthong.cameraId", camSel.value || "");
    sessionStorage.setItem("lienthong.micId", micSel.value || "");
    const pin = document.getElementById("pin");
    if (pin) sessionStorage.setItem("lienthong.pin", pin.value);
    if (stream) stream.getTracks().forEach((t) => t.stop());
    window.location.href = ev.target.dataset.href;
  });
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) start();
  else showError(window.JOIN_I18N.noDevice);
})();
