// The meeting room page (vanilla JS, no build step).  Protocol: docs/signalling.md.
//
// One WebSocket to the server carries signalling; one RTCPeerConnection carries media.  The
// page publishes a microphone track, the camera as two tracks (full and thumbnail layers) and an
// optional screen share; it receives the fixed slots the SFU describes in "joined" (main, chair,
// gallery, audio, screen) and labels each with the site that currently feeds it.
// State for tests and diagnostics lives on window.lienthong.
"use strict";

(function () {
  const PROTOCOL_VERSION = 1;
  const config = JSON.parse(document.getElementById("lienthong-config").textContent);
  const strings = config.strings || {};
  const $ = (id) => document.getElementById(id);

  function t(key, params) {
    let text = strings[key] || key;
    for (const [name, value] of Object.entries(params || {})) text = text.split("{" + name + "}").join(String(value));
    return text;
  }

  // ---- state (published for tests) ----
  const state = {
    version: PROTOCOL_VERSION,
    phase: "connecting",      // connecting | joined | reconnecting | closed
    joined: false,
    refused: null,            // {code, message} when the token did not let this site in
    closedReason: null,       // ended | removed | left | server_closing | connection_lost
    notice: null,
    me: null,                 // {id, site_id, site_name, role}
    participants: [],         // [{id, site_id, site_name, role, audio, video, screen, hand, muted_by_chair}]
    slots: {},                // slot name -> participant id feeding it (or null)
    mainSite: null,           // participant id in the main slot
    mainSiteName: null,
    mainView: null,           // who the main view shows: mainSite, or this site itself when it holds the floor
    floor: null,
    speaker: null,
    locked: false,
    hands: [],
    iceState: "new",
    framesDecoded: {},        // slot name -> frames decoded (from getStats)
    renderedFrames: {},       // slot name -> frames painted by its <video> (requestVideoFrameCallback)
    audioPacketsReceived: 0,
    audioPacketsBySlot: {},
    quality: { loss: null, rtt: null, bitrateKbps: null, sendKbps: null, level: "unknown" },  // bitrate received, sent
    sending: {},              // camera/thumb/screen -> {width, height, framesEncoded} of what this site sends
    sendLimits: {},           // send kind -> maxBitrate set on its sender
    audioBlocked: false,      // the browser refused to play sound before a click (see #btn-sound)
    localDevices: { audio: null, video: null },  // deviceId of the microphone and camera in use
    captured: {},             // camera/thumb -> {width, height} of the local tracks (before the encoder)
    errors: [],               // error messages from the server
    localTracks: { audio: false, camera: false, thumb: false, screen: false },
    deviceError: null,
    connects: 0,
    iceRestarts: 0,
    offersSent: 0,            // one at join; more only for ICE restarts (slots never renegotiate)
    pausedLayers: [],         // own layers stopped because nobody receives them ("layers" event)
  };
  window.lienthong = state;
  window.lienthongStats = state;  // the same object, under the name the SFU tests use

  let ws = null;
  let pc = null;
  let resumeKey = null;
  let layout = [];            // [{kind, send, slot}] in transceiver order, from "joined"
  let transceivers = [];      // same order
  let pendingCandidates = [];
  let localStream = null;     // mic + camera
  let thumbTrack = null;
  let pausedLayers = [];      // layers the server asked this site not to send (camera, thumb)
  let screenStream = null;
  let reconnectTimer = null;
  let pingTimer = null;
  let statsTimer = null;
  let lastInbound = null;
  let iceTimer = null;        // a "disconnected" ICE state that does not recover leads to an ICE restart
  let negotiating = false;
  let hasMic = false;
  let msgId = 0;
  const backoff = { attempt: 0 };
  const slotElements = {};    // slot name -> {video|audio element, tile}

  // ---- WebSocket ----
  function wsUrl() {
    const u = new URL(config.ws_path, location.href);
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    return u.toString();
  }

  function send(type, fields) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return null;
    const id = ++msgId;
    ws.send(JSON.stringify(Object.assign({ v: PROTOCOL_VERSION, type, id }, fields || {})));
    return id;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    state.connects += 1;
    setStatus(state.joined ? t("meeting.reconnecting") : t("meeting.connecting"));
    ws = new WebSocket(wsUrl());
    const socket = ws;
    socket.onopen = () => {
      const join = { token: config.token, lang: config.lang };
      const pin = sessionStorage.getItem("lienthong.pin");
      if (pin) join.pin = pin;
      if (resumeKey) join.resume = resumeKey;
      send("join", join);
      clearInterval(pingTimer);
      pingTimer = setInterval(() => send("ping"), (config.ping_seconds || 20) * 1000);
    };
    socket.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      handle(msg).catch((e) => console.error("lienthong: handling", msg.type, e));
    };
    socket.onclose = (ev) => {
      if (socket !== ws) return;
      clearInterval(pingTimer);
      if (state.phase === "closed") return;
      if (ev.code === 1001 && ev.reason === "server_closing") return closeRoom("server_closing");
      // Final closes (docs/signalling.md, Closing): no reconnect.  A "closed" message usually came first.
      if (ev.code === 4004) return closeRoom("ended");
      if (ev.code === 4005) return closeRoom("removed");
      if (ev.code === 4006) return closeRoom("left");
      if (ev.code === 4007) return closeRoom("replaced");
      if (ev.code === 1011 || ev.code === 4003) {
        // The server said why in a "refused" or "error" message (refused link, media unavailable).
        const last = state.errors[state.errors.length - 1];
        const text = last && ((config.lang === "vi" && last.message_vi) || last.message);
        return closeRoom(state.closedReason || ev.reason || "connection_lost", state.refused ? state.refused.message : text);
      }
      // A network drop: keep media running, reconnect within the grace period and resume.
      state.phase = "reconnecting";
      const delay = Math.min(500 * 2 ** backoff.attempt, 5000);
      backoff.attempt += 1;
      if (resumeKey && backoff.attempt > (config.reconnect_attempts || 12)) return closeRoom("connection_lost");
      if (!resumeKey && !state.joined && backoff.attempt > 3) return closeRoom("connection_lost");
      setStatus(t("meeting.reconnecting"));
      reconnectTimer = setTimeout(connect, delay);
    };
  }

  // ---- message handling ----
  async function handle(msg) {
    switch (msg.type) {
      case "joined": return onJoined(msg);
      case "refused": return onRefused(msg);
      case "answer": return onAnswer(msg);
      case "offer": return onOffer(msg);
      case "ice": return onRemoteCandidate(msg.candidate);
      case "participants": state.participants = msg.participants; return render();
      case "slots": return onSlots(msg.slots);
      case "speaker": state.speaker = msg.participant; return render();
      case "floor": state.floor = msg.participant; return render();
      case "hands": state.hands = msg.queue; return render();
      case "locked": state.locked = msg.locked; return render();
      case "muted": return onMutedByChair(msg.muted);
      case "layers": return onLayers(msg.paused);
      case "closed": return closeRoom(msg.reason, msg.message);
      case "pong": case "ack": return;
      case "error":
        if (msg.ref === "offer") await abandonOffer();
        state.errors.push({ code: msg.code, message: msg.message, message_vi: msg.message_vi || null, ref: msg.ref || null });
        if (state.errors.length > 50) state.errors.shift();
        setStatus(t("meeting.error", { message: (config.lang === "vi" && msg.message_vi) || msg.message }));
        return;
      default: return;
    }
  }

  function onRefused(msg) {
    state.refused = { code: msg.code, message: msg.message };
    closeRoom("refused", msg.message);
  }

  async function onJoined(msg) {
    const resumed = Boolean(msg.resumed) && pc !== null;
    backoff.attempt = 0;
    resumeKey = msg.resume;
    state.me = msg.me;
    state.phase = "joined";
    state.joined = true;
    state.participants = msg.participants || [];
    state.floor = msg.floor || null;
    state.locked = Boolean(msg.locked);
    state.hands = msg.hands || [];
    document.body.className = "role-" + msg.me.role;
    $("site-name").textContent = msg.me.site_name;
    $("role-badge").textContent = t("meeting.role." + msg.me.role);
    if (msg.meeting_title) $("meeting-title").textContent = msg.meeting_title;
    setStatus(t("meeting.joined"));
    if (msg.speaker !== undefined) state.speaker = msg.speaker;
    // Now, not after startMedia's awaits: a "slots" event arriving meanwhile is newer than this.
    onSlots(msg.slots || {});
    if (resumed) {
      // Same place, same peer connection: restart ICE if the media path broke too.  An offer
      // sent on the dropped socket will never be answered.
      if (negotiating) await abandonOffer();
      pausedLayers = msg.paused || [];   // events sent while the socket was down are lost
      await applyLayers();
      if (msg.ice_restart || ["failed", "disconnected"].includes(pc.iceConnectionState)) await restartIce();
      return;
    }
    // A fresh place (first join, or the old one expired): start media from scratch.
    stopMedia();
    layout = msg.layout || [];
    await startMedia(msg.ice_servers || []);
    render();
  }

  function onSlots(slots) {
    Object.assign(state.slots, slots);
    state.mainSite = state.slots.main || null;
    render();
  }

  function onMutedByChair(muted) {
    const me = participant(state.me && state.me.id);
    if (me) me.muted_by_chair = muted;
    if (muted) setMic(false);
    setStatus(t(muted ? "meeting.muted_by_chair" : "meeting.unmuted_by_chair"));
    render();
  }

  // ---- media ----
  async function openDevices() {
    const role = state.me.role;
    if (role === "observer") return null;
    const cameraId = sessionStorage.getItem("lienthong.cameraId");
    const micId = sessionStorage.getItem("lienthong.micId");
    const video = { width: { ideal: 1280, max: 1280 }, height: { ideal: 720, max: 720 }, frameRate: { ideal: 30, max: 30 } };
    if (cameraId) video.deviceId = { exact: cameraId };
    const audio = micId ? { deviceId: { exact: micId } } : true;
    const gum = (constraints) => navigator.mediaDevices.getUserMedia(constraints);
    const anyCamera = { width: { ideal: 1280, max: 1280 }, height: { ideal: 720, max: 720 } };
    // The chosen devices; else the defaults (a stored device may be gone); else whichever of the
    // two exists (a room with a microphone and no camera still speaks, and the reverse).
    let lastError = null;
    const attempts = [{ audio, video }, { audio: true, video: anyCamera }, { audio: true }, { video: anyCamera }];
    for (const [i, constraints] of attempts.entries()) {
      try {
        const stream = await gum(constraints);
        if (i >= 2) {  // only one of the two: say what failed
          state.deviceError = lastError.name || String(lastError);
          setNotice(t("meeting.device_error", { error: state.deviceError }), false);
        }
        return stream;
      } catch (e) { lastError = e; }
    }
    state.deviceError = lastError ? lastError.name || String(lastError) : "unknown";
    setNotice(t("meeting.device_error", { error: state.deviceError }), false);
    return null;
  }

  async function makeThumb(track) {
    // The thumbnail layer: a clone of the camera with lower constraints and bitrate.
    const thumb = track.clone();
    try {
      await thumb.applyConstraints({ width: { ideal: 320, max: 320 }, height: { ideal: 180, max: 180 }, frameRate: { max: 15 } });
    } catch (e) { /* keep the clone; the sender's scaleResolutionDownBy does the rest */ }
    return thumb;
  }

  async function startMedia(iceServers) {
    localStream = await openDevices();
    const mic = localStream ? localStream.getAudioTracks()[0] || null : null;
    const cam = localStream ? localStream.getVideoTracks()[0] || null : null;
    thumbTrack = cam ? await makeThumb(cam) : null;
    state.localDevices = { audio: mic ? mic.getSettings().deviceId || null : null, video: cam ? cam.getSettings().deviceId || null : null };
    if (cam) {
      const c = cam.getSettings(), th = thumbTrack.getSettings();
      state.captured = { camera: { width: c.width || 0, height: c.height || 0 }, thumb: { width: th.width || 0, height: th.height || 0 } };
    }
    pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
    pc.onicecandidate = (ev) => send("ice", { candidate: ev.candidate ? ev.candidate.toJSON() : null });
    const thisPc = pc;
    pc.oniceconnectionstatechange = () => {
      if (thisPc !== pc) return;
      state.iceState = pc.iceConnectionState;
      clearTimeout(iceTimer);
      if (pc.iceConnectionState === "failed") restartIce();
      // "disconnected" often heals by itself (a short outage); restart only if it lasts.
      if (pc.iceConnectionState === "disconnected") iceTimer = setTimeout(restartIce, 4000);
    };
    pc.onconnectionstatechange = () => {
      if (thisPc === pc && pc.connectionState === "failed" && state.phase === "joined") setStatus(t("meeting.media_failed"));
    };
    pc.ontrack = (ev) => attachTrack(ev.transceiver, ev.track);
    showSelfView(cam);
    transceivers = [];
    for (const entry of layout) {
      const track = { audio: mic, camera: cam, thumb: thumbTrack, screen: null }[entry.send] || null;
      const direction = entry.direction || (entry.send && entry.slot ? "sendrecv" : entry.send ? "sendonly" : "recvonly");
      const init = { direction };
      // The thumbnail's limits go in at creation (no setParameters before negotiation: Firefox
      // refuses it); where applyConstraints left the clone large, the encoder scales it down.
      if (entry.send === "thumb") init.sendEncodings = [Object.assign({ maxBitrate: entry.max_bitrate || 150000, maxFramerate: 15 },
                                                                      thumbScale(cam) > 1.01 ? { scaleResolutionDownBy: thumbScale(cam) } : {})];
      if (entry.send === "camera") init.sendEncodings = [{ maxBitrate: entry.max_bitrate || 1500000 }];
      if (entry.send === "screen") init.sendEncodings = [{ maxBitrate: entry.max_bitrate || 1500000 }];
      const tr = pc.addTransceiver(track || entry.kind, init);
      if (!track && entry.send && direction !== "recvonly") tr.direction = direction;  // a placeholder sender (replaceTrack later)
      transceivers.push(tr);
      if (track) state.localTracks[entry.send] = true;
      if (entry.send === "thumb" && track) state.sendLimits.thumb = ((tr.sender.getParameters().encodings || [])[0] || {}).maxBitrate || null;
    }
    // Others see which of camera and microphone this site really has.
    if (state.me.role !== "observer" && (!mic || !cam)) send("media_state", { audio: Boolean(mic), video: Boolean(cam) });
    hasMic = Boolean(mic);
    $("btn-cam").disabled = !cam;
    prepareSlotElements();
    state.layout = layout;
    state.transceiverKinds = transceivers.map((tr) => tr.receiver.track.kind);
    state.pcCreated = true;
    startStats();
    if (config.server_offers) return;  // the server sends an offer
    await negotiate({});
  }

  function thumbScale(cam) {
    // How much the encoder must shrink the thumbnail clone to reach ~320 px wide.
    const width = (thumbTrack && thumbTrack.getSettings().width) || (cam && cam.getSettings().width) || 1280;
    return Math.max(1, width / 320);
  }

  async function scaleThumb(transceiver, cam) {
    // After a camera switch (negotiated by then, so setParameters is allowed everywhere).
    const factor = thumbScale(cam);
    try {
      const params = transceiver.sender.getParameters();
      if (!params.encodings || !params.encodings.length) params.encodings = [{}];
      params.encodings[0].maxBitrate = 150000;
      params.encodings[0].maxFramerate = 15;
      params.encodings[0].scaleResolutionDownBy = factor > 1.01 ? factor : 1;
      await transceiver.sender.setParameters(params);
      state.sendLimits.thumb = transceiver.sender.getParameters().encodings[0].maxBitrate;
    } catch (e) { /* the old limits stay */ }
  }

  async function negotiate(options) {
    negotiating = true;
    state.offersSent += 1;
    const offer = await pc.createOffer(options);
    await pc.setLocalDescription(offer);
    send("offer", { sdp: pc.localDescription.sdp });
  }

  async function restartIce() {
    // Only while joined (a dropped WebSocket cannot carry the offer: the resume does it) and
    // never over an offer still waiting for its answer.
    clearTimeout(iceTimer);
    if (!pc || state.phase !== "joined" || negotiating || pc.signalingState !== "stable") return;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    state.iceRestarts += 1;
    await negotiate({ iceRestart: true });
  }

  async function abandonOffer() {
    // The server refused our offer (or the socket that carried it dropped): back to stable.
    negotiating = false;
    if (pc && pc.signalingState === "have-local-offer") {
      try { await pc.setLocalDescription({ type: "rollback" }); } catch (e) { /* already stable */ }
    }
  }

  function stopMedia() {
    // Close the previous peer connection and devices (a rejoin after the place expired).
    clearTimeout(iceTimer);
    negotiating = false;
    if (pc) { pc.close(); pc = null; }
    if (localStream) localStream.getTracks().forEach((tr) => tr.stop());
    if (thumbTrack) thumbTrack.stop();
    if (screenStream) screenStream.getTracks().forEach((tr) => tr.stop());
    localStream = thumbTrack = screenStream = null;
    transceivers = [];
    pendingCandidates = [];
    lastInbound = null;
    // Nothing of the old connection may pass for the new one's.
    state.iceState = "new";
    state.pcCreated = false;
    state.mids = null;
    state.framesDecoded = {};
    state.audioPacketsReceived = 0;
    state.audioPacketsBySlot = {};
    state.sending = {};
    for (const slot of Object.keys(slotElements)) delete slotElements[slot];
  }

  function showSelfView(cam) {
    const video = $("video-self");
    video.srcObject = cam ? new MediaStream([cam]) : null;
    $("tile-self").classList.toggle("empty", !cam);
    if (cam) video.play().catch(() => {});
  }

  async function onAnswer(msg) {
    if (!pc) return;
    negotiating = false;
    // A first answer comes from a fresh server connection, whose layers all start unpaused.
    if (!pc.currentRemoteDescription) pausedLayers = [];
    await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    state.mids = transceivers.map((tr) => tr.mid);
    mapSlotsToTransceivers();
    for (const c of pendingCandidates.splice(0)) await addCandidate(c);
    await applyLayers();
  }

  // Layers nobody receives (the server's "layers" event, docs/signalling.md): their encodings
  // stop, which saves the site's uplink; set active again, the encoder restarts with a keyframe.
  async function onLayers(paused) {
    pausedLayers = Array.isArray(paused) ? paused : [];
    await applyLayers();
  }

  // One at a time: a getParameters read while another setParameters is pending would see the
  // old state; each run reads the latest pausedLayers, so the last one leaves the right state.
  let layersQueue = Promise.resolve();
  function applyLayers() {
    layersQueue = layersQueue.then(applyLayersNow, applyLayersNow);
    return layersQueue;
  }

  async function applyLayersNow() {
    if (!pc || !pc.currentRemoteDescription) return;  // applied once negotiated (Firefox refuses before)
    const thisPc = pc;
    for (let i = 0; i < layout.length && i < transceivers.length; i++) {
      const name = layout[i].send;
      if (name !== "camera" && name !== "thumb") continue;
      const sender = transceivers[i].sender;
      const params = sender.getParameters();
      const active = !pausedLayers.includes(name);
      if (!params.encodings || !params.encodings.length || params.encodings.every((e) => e.active !== false) === active) continue;
      params.encodings.forEach((e) => { e.active = active; });
      try {
        await sender.setParameters(params);
      } catch (err) {
        console.warn("layers: setParameters failed", name, err);
      }
      if (thisPc !== pc) return;
    }
    state.pausedLayers = pausedLayers.filter((name) => name === "camera" || name === "thumb");
  }

  async function onOffer(msg) {
    if (!pc.currentRemoteDescription) pausedLayers = [];
    await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    send("answer", { sdp: pc.localDescription.sdp });
    mapSlotsToTransceivers();
    for (const c of pendingCandidates.splice(0)) await addCandidate(c);
    await applyLayers();
  }

  async function onRemoteCandidate(candidate) {
    if (!pc || !pc.remoteDescription) { pendingCandidates.push(candidate); return; }
    await addCandidate(candidate);
  }

  async function addCandidate(candidate) {
    try { await pc.addIceCandidate(candidate || null); } catch (e) { console.warn("lienthong: candidate", e); }
  }

  // ---- slots ----
  function prepareSlotElements() {
    const gallery = $("gallery");
    gallery.textContent = "";
    $("audio-sinks").textContent = "";
    for (const entry of layout) {
      if (!entry.slot || slotElements[entry.slot]) continue;
      if (entry.kind === "audio") {
        const audio = document.createElement("audio");
        audio.autoplay = true;
        $("audio-sinks").appendChild(audio);
        slotElements[entry.slot] = { media: audio, tile: null };
      } else if (entry.slot === "main" || entry.slot === "chair" || entry.slot === "screen") {
        const tile = $("tile-" + entry.slot);
        slotElements[entry.slot] = { media: tile.querySelector("video"), tile };
      } else {
        const tile = $("tpl-tile").content.firstElementChild.cloneNode(true);
        tile.dataset.slot = entry.slot;
        gallery.appendChild(tile);
        slotElements[entry.slot] = { media: tile.querySelector("video"), tile };
      }
    }
  }

  function mapSlotsToTransceivers() {
    transceivers.forEach((tr, i) => { if (layout[i].slot) tr.lienthongSlot = layout[i].slot; });
    for (const tr of transceivers) if (tr.lienthongSlot && tr.receiver.track) attachTrack(tr, tr.receiver.track);
  }

  function attachTrack(transceiver, track) {
    let slot = transceiver.lienthongSlot;
    if (!slot) {
      const i = transceivers.indexOf(transceiver);
      slot = i >= 0 && layout[i] ? layout[i].slot : null;
    }
    if (!slot || !slotElements[slot]) return;
    const el = slotElements[slot].media;
    if (el.srcObject && el.srcObject.getTracks()[0] === track) return;
    el.srcObject = new MediaStream([track]);
    play(el);
    countRenderedFrames(el, slot);
  }

  function play(el) {
    // Browsers may refuse sound before the person has touched the page (autoplay policy): then
    // one click on the prompt starts every audio slot.
    el.play().catch((e) => {
      if (e && e.name === "NotAllowedError" && el.tagName === "AUDIO") {
        state.audioBlocked = true;
        $("btn-sound").hidden = false;
      }
    });
  }

  function enableSound() {
    for (const el of $("audio-sinks").querySelectorAll("audio")) el.play().catch(() => {});
    state.audioBlocked = false;
    $("btn-sound").hidden = true;
  }

  function countRenderedFrames(el, slot) {
    // Frames actually painted (not just decoded); where requestVideoFrameCallback is missing
    // (older Firefox), getVideoPlaybackQuality is read by collectStats instead.
    if (el.tagName !== "VIDEO" || el.lienthongCounting || !("requestVideoFrameCallback" in el)) return;
    el.lienthongCounting = true;
    const tick = () => {
      state.renderedFrames[slot] = (state.renderedFrames[slot] || 0) + 1;
      el.requestVideoFrameCallback(tick);
    };
    el.requestVideoFrameCallback(tick);
  }

  // ---- statistics: per-slot frames, audio packets, connection quality ----
  function startStats() {
    clearInterval(statsTimer);
    statsTimer = setInterval(() => collectStats().catch(() => {}), 1000);
  }

  async function collectStats() {
    if (!pc) return;
    const midToSlot = {}, trackToSlot = {}, midToSend = {};
    transceivers.forEach((tr, i) => {
      if (layout[i] && layout[i].send && tr.mid !== null) midToSend[tr.mid] = layout[i].send;
      if (!layout[i] || !layout[i].slot) return;
      if (tr.mid !== null) midToSlot[tr.mid] = layout[i].slot;
      if (tr.receiver.track) trackToSlot[tr.receiver.track.id] = layout[i].slot;
    });
    const report = await pc.getStats();
    let audioPackets = 0, bytes = 0, lost = 0, received = 0, rtt = null, sentBytes = 0;
    const frames = {};
    const sending = {};
    const audioBySlot = {};
    report.forEach((s) => {
      if (s.type === "inbound-rtp") {
        // Chromium names the mid; Firefox (before 131) only the receiving track.
        const slot = (s.mid !== undefined && midToSlot[s.mid]) || trackToSlot[s.trackIdentifier] || null;
        bytes += s.bytesReceived || 0;
        lost += Math.max(0, s.packetsLost || 0);
        received += s.packetsReceived || 0;
        if (s.kind === "video" && slot) frames[slot] = s.framesDecoded || 0;
        if (s.kind === "audio") {
          audioPackets += s.packetsReceived || 0;
          if (slot) audioBySlot[slot] = s.packetsReceived || 0;
        }
      } else if (s.type === "outbound-rtp") {
        sentBytes += s.bytesSent || 0;
        const kind = midToSend[s.mid];
        if (kind && s.kind === "video") {
          // A paused layer reports no frame size: keep the size it was sent at.
          const before = state.sending[kind] || {};
          sending[kind] = { width: s.frameWidth || before.width || 0, height: s.frameHeight || before.height || 0,
                            framesEncoded: s.framesEncoded || 0,
                            bytesSent: s.bytesSent || 0, limitedBy: s.qualityLimitationReason || null };
        }
      } else if (s.type === "candidate-pair" && (s.selected || s.nominated) && s.state === "succeeded") {
        if (typeof s.currentRoundTripTime === "number") rtt = s.currentRoundTripTime;
      } else if (s.type === "remote-inbound-rtp" && rtt === null && typeof s.roundTripTime === "number") {
        rtt = s.roundTripTime;  // Firefox has no currentRoundTripTime on the pair: RTCP's RTT
      }
    });
    // Receive-only slots have no mid in some Firefox versions' stats: fall back to receivers.
    if (!Object.keys(frames).length) {
      for (const tr of transceivers) {
        if (!tr.lienthongSlot || !tr.receiver.track || tr.receiver.track.kind !== "video") continue;
        const rs = await tr.receiver.getStats();
        rs.forEach((s) => { if (s.type === "inbound-rtp") frames[tr.lienthongSlot] = s.framesDecoded || 0; });
      }
    }
    for (const [slot, el] of Object.entries(slotElements)) {
      if (el.media.tagName === "VIDEO" && !("requestVideoFrameCallback" in el.media) && el.media.getVideoPlaybackQuality) {
        state.renderedFrames[slot] = el.media.getVideoPlaybackQuality().totalVideoFrames;
      }
    }
    state.sending = sending;
    state.framesDecoded = frames;
    state.audioPacketsReceived = audioPackets;
    state.audioPacketsBySlot = audioBySlot;
    const now = performance.now();
    if (lastInbound) {
      const seconds = (now - lastInbound.at) / 1000;
      const dLost = lost - lastInbound.lost, dRecv = received - lastInbound.received;
      const loss = dLost + dRecv > 0 ? (100 * dLost) / (dLost + dRecv) : 0;
      const kbps = seconds > 0 ? (8 * (bytes - lastInbound.bytes)) / seconds / 1000 : 0;
      const rttMs = rtt === null ? null : Math.round(rtt * 1000);
      const level = loss > 5 || (rttMs !== null && rttMs > 400) ? "poor" : loss > 1 || (rttMs !== null && rttMs > 150) ? "fair" : "good";
      const sendKbps = seconds > 0 ? (8 * (sentBytes - lastInbound.sentBytes)) / seconds / 1000 : 0;
      state.quality = { loss: Math.round(loss * 10) / 10, rtt: rttMs, bitrateKbps: Math.round(kbps), sendKbps: Math.round(sendKbps), level };
      renderQuality();
    }
    lastInbound = { at: now, bytes, lost, received, sentBytes };
  }

  function renderQuality() {
    const q = state.quality;
    const el = $("quality");
    el.className = "quality " + q.level;
    $("quality-label").textContent = t("meeting.quality." + q.level);
    $("quality-detail").textContent = t("meeting.quality.detail", { loss: q.loss, rtt: q.rtt === null ? "–" : q.rtt, bitrate: q.bitrateKbps, send: q.sendKbps });
  }

  // ---- local controls ----
  function setMic(on) {
    const track = localStream && localStream.getAudioTracks()[0];
    if (!track) return;
    track.enabled = on;
    state.localTracks.audio = on;
    $("btn-mic").textContent = t(on ? "meeting.mic_off" : "meeting.mic_on");
    $("btn-mic").classList.toggle("active", !on);
    send("media_state", { audio: on });
  }

  function setCamera(on) {
    const track = localStream && localStream.getVideoTracks()[0];
    if (!track) return;
    track.enabled = on;
    if (thumbTrack) thumbTrack.enabled = on;
    state.localTracks.camera = on;
    $("btn-cam").textContent = t(on ? "meeting.cam_off" : "meeting.cam_on");
    $("btn-cam").classList.toggle("active", !on);
    send("media_state", { video: on });
  }

  function senderFor(kind) {
    const i = layout.findIndex((e) => e.send === kind);
    return i >= 0 && transceivers[i] ? transceivers[i].sender : null;
  }

  async function toggleScreen() {
    const sender = senderFor("screen");
    if (!sender) return;
    if (screenStream) return stopScreen();
    try {
      screenStream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { max: 15 } }, audio: false });
    } catch (e) {
      // The person cancelled the picker (NotAllowedError/AbortError): nothing to say. Anything
      // else (no screen to capture, a policy) is said, so the button does not seem dead.
      if (e && e.name !== "NotAllowedError" && e.name !== "AbortError") {
        setNotice(t("meeting.share_error", { error: e.name || String(e) }), false);
      }
      return;
    }
    if (state.notice && $("notice-text").textContent.startsWith(t("meeting.share_error", { error: "" }))) {
      $("notice").hidden = true;
      state.notice = null;
    }
    const track = screenStream.getVideoTracks()[0];
    track.onended = () => stopScreen();
    const i = layout.findIndex((e) => e.send === "screen");
    if (transceivers[i].direction === "recvonly") transceivers[i].direction = "sendrecv";
    await sender.replaceTrack(track);
    state.localTracks.screen = true;
    $("btn-share").textContent = t("meeting.stop_share");
    $("btn-share").classList.add("active");
    send("media_state", { screen: true });
  }

  async function stopScreen() {
    const sender = senderFor("screen");
    if (screenStream) screenStream.getTracks().forEach((tr) => tr.stop());
    screenStream = null;
    if (sender) await sender.replaceTrack(null);
    state.localTracks.screen = false;
    $("btn-share").textContent = t("meeting.share");
    $("btn-share").classList.remove("active");
    send("media_state", { screen: false });
  }

  async function switchDevice(kind, deviceId) {
    // Another camera or microphone: replaceTrack on the same senders (no renegotiation); the
    // choice is remembered for the next join (the join page's sessionStorage keys).
    if (!localStream) return;
    const audio = kind === "audio";
    const constraints = audio ? { audio: { deviceId: { exact: deviceId } } }
      : { video: { deviceId: { exact: deviceId }, width: { ideal: 1280, max: 1280 }, height: { ideal: 720, max: 720 } } };
    const track = (await navigator.mediaDevices.getUserMedia(constraints)).getTracks()[0];
    const old = audio ? localStream.getAudioTracks()[0] : localStream.getVideoTracks()[0];
    track.enabled = audio ? state.localTracks.audio : state.localTracks.camera;
    if (audio) {
      await senderFor("audio").replaceTrack(track);
    } else {
      await senderFor("camera").replaceTrack(track);
      const thumb = await makeThumb(track);
      thumb.enabled = track.enabled;
      await senderFor("thumb").replaceTrack(thumb);
      if (thumbTrack) thumbTrack.stop();
      thumbTrack = thumb;
      const i = layout.findIndex((e) => e.send === "thumb");
      if (i >= 0) await scaleThumb(transceivers[i], track);
      showSelfView(track);
    }
    if (old) { localStream.removeTrack(old); old.stop(); }
    localStream.addTrack(track);
    sessionStorage.setItem(audio ? "lienthong.micId" : "lienthong.cameraId", deviceId);
    state.localDevices[audio ? "audio" : "video"] = track.getSettings().deviceId || deviceId;
  }

  async function fillDevicePickers() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices();
    for (const [kind, select, key] of [["videoinput", $("select-camera"), "lienthong.cameraId"], ["audioinput", $("select-mic"), "lienthong.micId"]]) {
      select.textContent = "";
      const current = localStream && (kind === "videoinput" ? localStream.getVideoTracks()[0] : localStream.getAudioTracks()[0]);
      const currentId = current ? current.getSettings().deviceId : sessionStorage.getItem(key);
      devices.filter((d) => d.kind === kind).forEach((d, i) => {
        const opt = document.createElement("option");
        opt.value = d.deviceId;
        opt.textContent = d.label || (kind === "videoinput" ? t("meeting.camera") : t("meeting.microphone")) + " " + (i + 1);
        opt.selected = d.deviceId === currentId;
        select.appendChild(opt);
      });
    }
  }

  function raiseHand() {
    const me = participant(state.me && state.me.id);
    send("hand", { raised: !(me && me.hand) });
  }

  // ---- rendering ----
  function participant(id) {
    return state.participants.find((p) => p.id === id) || null;
  }

  function render() {
    const me = state.me;
    const mainP = participant(state.mainSite);
    state.mainSiteName = mainP ? mainP.site_name : null;
    // The SFU never sends a site its own picture: holding the floor, the site's main view shows
    // another site (or nothing), and the page says that this site has the floor.
    const selfOnFloor = Boolean(me && state.floor === me.id && !mainP);
    state.mainView = mainP ? mainP.id : selfOnFloor ? me.id : null;
    $("tile-main").classList.toggle("self-floor", selfOnFloor);
    $("tile-self").classList.toggle("speaking", Boolean(me && me.id === state.speaker));
    if (me) $("tile-self").querySelector(".name").textContent = me.site_name;
    // Stage and gallery labels.
    for (const [slot, el] of Object.entries(slotElements)) {
      if (!el.tile) continue;
      const p = participant(state.slots[slot]);
      el.tile.querySelector(".name").textContent = p ? p.site_name
        : slot === "main" && selfOnFloor ? t("meeting.you_have_floor") : t("meeting.empty_slot");
      el.tile.classList.toggle("empty", !p);
      el.tile.classList.toggle("speaking", Boolean(p && p.id === state.speaker));
      el.tile.dataset.participant = p ? p.id : "";
      // Only tiles with a picture take room (a phone has little): a gallery slot nobody feeds,
      // the chair view on the chair's own page, the screen when nobody shares.
      if (slot === "screen" || slot.startsWith("gallery-")) el.tile.hidden = !p;
      if (slot === "chair") el.tile.hidden = !p && Boolean(me && me.role === "chair");
    }
    const gallery = $("gallery");
    gallery.hidden = !Array.from(gallery.children).some((tile) => !tile.hidden);
    const floor = participant(state.floor);
    $("floor-line").textContent = !floor ? t("meeting.no_floor")
      : me && floor.id === me.id ? t("meeting.you_have_floor") : t("meeting.floor", { name: floor.site_name });
    $("floor-line").classList.toggle("mine", Boolean(me && floor && floor.id === me.id));
    $("locked-badge").hidden = !state.locked;
    $("btn-lock").textContent = t(state.locked ? "meeting.unlock" : "meeting.lock");
    $("btn-take-floor").disabled = !state.floor;
    // Participants.
    const list = $("participants");
    list.textContent = "";
    for (const p of state.participants) {
      const li = $("tpl-participant").content.firstElementChild.cloneNode(true);
      li.dataset.participant = p.id;
      li.querySelector(".name").textContent = p.site_name;
      const flags = [];
      if (p.role === "chair") flags.push(t("meeting.role.chair"));
      if (p.role === "observer") flags.push(t("meeting.role.observer"));
      // Words, not emoji: the machines at many sites have no emoji font.
      if (p.muted_by_chair) flags.push(t("meeting.flag_muted_by_chair"));
      else if (p.audio === false) flags.push(t("meeting.flag_mic_off"));
      if (p.video === false) flags.push(t("meeting.flag_cam_off"));
      if (p.screen) flags.push(t("meeting.flag_sharing"));
      if (p.hand) flags.push(t("meeting.hand_raised"));
      if (p.id === state.speaker) flags.push(t("meeting.speaking"));
      li.querySelector(".flags").textContent = flags.join(" · ");
      li.classList.toggle("me", Boolean(me && p.id === me.id));
      li.classList.toggle("speaking", p.id === state.speaker);
      const mute = li.querySelector('[data-action="mute_site"]');
      mute.textContent = t(p.muted_by_chair ? "meeting.unmute_site" : "meeting.mute_site");
      mute.dataset.muted = p.muted_by_chair ? "1" : "";
      if (p.role === "observer") { li.querySelector('[data-action="give_floor"]').hidden = true; mute.hidden = true; }
      list.appendChild(li);
    }
    $("participant-count").textContent = String(state.participants.length);
    // Hand queue (chair).
    const hands = $("hand-queue");
    hands.textContent = "";
    for (const id of state.hands) {
      const p = participant(id);
      if (!p) continue;
      const li = document.createElement("li");
      li.textContent = p.site_name + " ";
      const give = document.createElement("button");
      give.type = "button";
      give.textContent = t("meeting.give_floor");
      give.onclick = () => send("give_floor", { site: id });
      li.appendChild(give);
      hands.appendChild(li);
    }
    $("no-hands").hidden = state.hands.length > 0;
    const mine = me && participant(me.id);
    // Muted by the chair: the SFU drops this site's audio anyway; the button waits for the chair.
    $("btn-mic").disabled = !hasMic || Boolean(mine && mine.muted_by_chair);
    $("btn-hand").textContent = t(mine && mine.hand ? "meeting.lower_hand" : "meeting.raise_hand");
    $("btn-hand").classList.toggle("active", Boolean(mine && mine.hand));
  }

  function setStatus(text) { $("status").textContent = text; }

  function setNotice(text, rejoin) {
    state.notice = text;
    $("notice-text").textContent = text;
    $("notice").hidden = false;
    $("notice-rejoin").hidden = !rejoin;
  }

  function closeRoom(reason, message) {
    if (state.phase === "closed") return;
    state.phase = "closed";
    state.closedReason = reason;
    state.joined = false;
    clearTimeout(reconnectTimer);
    clearInterval(pingTimer);
    clearInterval(statsTimer);
    const known = { ended: "meeting.ended", removed: "meeting.removed", left: "meeting.left",
                    server_closing: "meeting.server_closing", connection_lost: "meeting.connection_lost",
                    replaced: "meeting.replaced" };
    const text = message || t(known[reason] || "meeting.connection_lost");
    setNotice(text, reason === "server_closing" || reason === "connection_lost" || reason === "left");
    setStatus(text);
    stopMedia();
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, reason);
    $("room").hidden = reason === "refused";
  }

  // ---- wiring ----
  function wire() {
    $("btn-mic").onclick = () => setMic(!state.localTracks.audio);
    $("btn-cam").onclick = () => setCamera(!state.localTracks.camera);
    $("btn-share").onclick = () => toggleScreen();
    $("btn-hand").onclick = () => raiseHand();
    $("btn-leave").onclick = () => { send("leave"); closeRoom("left"); };
    $("btn-take-floor").onclick = () => send("take_floor");
    $("btn-lock").onclick = () => send("lock", { locked: !state.locked });
    $("btn-end").onclick = () => { if (confirm(t("meeting.confirm_end"))) send("end"); };
    $("notice-rejoin").onclick = () => location.reload();
    $("btn-sound").onclick = () => enableSound();
    $("participants").onclick = (ev) => {
      const button = ev.target.closest("button[data-action]");
      if (!button) return;
      const id = button.closest("li").dataset.participant;
      const action = button.dataset.action;
      if (action === "give_floor") send("give_floor", { site: id });
      if (action === "mute_site") send("mute_site", { site: id, muted: !button.dataset.muted });
      if (action === "remove_site") {
        const p = participant(id);
        if (confirm(t("meeting.confirm_remove", { name: p ? p.site_name : id }))) send("remove_site", { site: id });
      }
    };
    $("select-camera").onchange = (ev) => switchDevice("video", ev.target.value).catch((e) => setStatus(String(e)));
    $("select-mic").onchange = (ev) => switchDevice("audio", ev.target.value).catch((e) => setStatus(String(e)));
    document.querySelector("details.devices").addEventListener("toggle", () => fillDevicePickers().catch(() => {}));
    window.addEventListener("pagehide", () => { if (state.phase === "joined") send("leave"); });
  }

  // Test and diagnostic hooks.
  state.send = send;
  state.giveFloor = (id) => send("give_floor", { site: id });
  state.leave = () => { send("leave"); closeRoom("left"); };
  state.dropConnection = () => { if (ws) ws.close(4000, "test drop"); };
  state.restartIce = () => restartIce();

  wire();
  if (config.refused) {
    // The server already said why this link does not let the site in (the notice shows it).
    state.refused = config.refused;
    state.phase = "closed";
    state.closedReason = "refused";
    setStatus(config.refused.message);
  } else {
    connect();
  }
})();
