// The /ws connection: authenticate, resume from the last acked seq, ack what was
// processed, reconnect with back-off after a drop (API.md "WebSocket /ws").
//
// Durable frames (those with `seq`) arrive at least once: a frame whose seq is not above
// the last one processed is a replay and is skipped. `onFrame` must finish processing a
// frame before its seq is acknowledged, so a crash never loses a message.

const HEARTBEAT_MS = 20000;
const AUTH_FALLBACK_MS = 1500;

export class Realtime {
  constructor({ deviceId, token, resumeFrom, onFrame, onStatus, onAcked }) {
    this.deviceId = deviceId;
    this.token = token;
    this.lastSeq = resumeFrom ?? null; // highest seq processed (null: none yet)
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.onAcked = onAcked;
    this.socket = null;
    this.retryMs = 500;
    this.stopped = false;
    this.queue = Promise.resolve();
    this.timer = null;
    this.lastHeard = 0;
    window.addEventListener("online", () => this.reconnectNow());
    // The browser knows the network is gone: drop the socket now rather than waiting
    // for TCP to notice; "online" reconnects and resumes.
    window.addEventListener("offline", () => this.drop());
    // A half-open connection (a dead Wi-Fi, a sleeping laptop) stays "open" for minutes:
    // ping, and drop a connection that has said nothing for too long.
    setInterval(() => this.heartbeat(), HEARTBEAT_MS);
  }

  heartbeat() {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastHeard > 2 * HEARTBEAT_MS + 5000) {
      this.drop();
      return;
    }
    this.send({ type: "ping" });
  }

  drop() {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    socket.onclose = null;
    socket.close(4000, "network lost");
    this.onStatus("offline");
    if (!this.stopped) this.timer = setTimeout(() => this.open(), this.retryMs);
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams({ device_id: this.deviceId });
    // The session cookie authenticates the upgrade and the server answers hello at
    // once, so resume_from goes in the URL too.
    if (this.lastSeq !== null) params.set("resume_from", String(this.lastSeq));
    return `${scheme}//${location.host}/ws?${params}`;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
  }

  reconnectNow() {
    if (this.stopped) return;
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) return;
    clearTimeout(this.timer);
    this.retryMs = 500;
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    this.onStatus("connecting");
    const socket = new WebSocket(this.url());
    this.socket = socket;
    this.authenticated = false;
    socket.onopen = () => {
      this.lastHeard = Date.now();
      // No hello soon after opening: the cookie did not authenticate us (blocked, or a
      // token-only login), so send the token in an auth frame (never in the URL).
      if (this.token) {
        setTimeout(() => {
          if (this.socket !== socket || this.authenticated || socket.readyState !== WebSocket.OPEN) return;
          const auth = { type: "auth", token: this.token };
          if (this.lastSeq !== null) auth.resume_from = this.lastSeq;
          socket.send(JSON.stringify(auth));
        }, AUTH_FALLBACK_MS);
      }
    };
    socket.onmessage = (event) => {
      if (this.socket !== socket) return; // a dropped socket: resume replays its frames
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      // One frame at a time, in order: decryption is asynchronous.
      this.queue = this.queue.then(() => this.handle(frame)).catch((err) => console.error(err));
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (event.code === 4401) {
        this.onStatus("unauthenticated");
        return;
      }
      this.onStatus("offline");
      if (!this.stopped) {
        this.timer = setTimeout(() => this.open(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 5000);
      }
    };
  }

  async handle(frame) {
    if (frame.type === "hello") {
      this.authenticated = true;
      this.retryMs = 500;
      if (this.lastSeq === null) this.lastSeq = frame.resume_from;
      this.onStatus("online");
      return;
    }
    const seq = Number.isInteger(frame.seq) ? frame.seq : null;
    if (seq !== null && this.lastSeq !== null && seq <= this.lastSeq) return;
    await this.onFrame(frame);
    if (seq !== null) {
      this.lastSeq = seq;
      this.send({ type: "ack", seq });
      this.onAcked(seq);
    }
  }

  /** Send a frame if connected; returns false when it could not be sent. */
  send(frame) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }
}
