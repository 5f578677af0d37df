// flask_sse_stream's WebSocket client: EventSource's interface over the stream's WebSocket transport.
// Served by the blueprint at <SSE_URL_PREFIX>/websocket.js; an ES module, no build step:
//
//   import { WebSocketSource } from "/stream/websocket.js";
//   const source = new WebSocketSource("/stream?channel=news");
//   source.onmessage = (event) => console.log(event.lastEventId, event.data);
//   source.addEventListener("sse-reset", () => location.reload());
//
// Each server frame is one JSON object {id, event, data, retry} (see docs/websocket.rst). On a close
// it reconnects with ?lastEventId=, after a delay that doubles from `retry` up to `maxDelay`, each
// drawn at random in [delay / 2, delay]; it stops for good on the "stop" codes (4400, 4403, 1003,
// 1007, 1008, 1009), where readyState becomes CLOSED and an "error" event is dispatched.

const STOP = new Set([1002, 1003, 1007, 1008, 1009, 4400, 4403]);

export class WebSocketSource extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;

  constructor(url, options = {}) {
    super();
    const absolute = new URL(url, location.href);
    absolute.protocol = absolute.protocol === "https:" ? "wss:" : "ws:";
    this.url = absolute.href;
    this.readyState = WebSocketSource.CONNECTING;
    this.lastEventId = "";
    this.retry = options.retry ?? 1000;
    this.maxDelay = options.maxDelay ?? 30000;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    // Why the last socket closed: {code, reason}, for pages that show it.
    this.closeInfo = null;
    this._failures = 0;
    this._timer = null;
    this._socket = null;
    this._connect();
  }

  close() {
    this.readyState = WebSocketSource.CLOSED;
    clearTimeout(this._timer);
    if (this._socket) this._socket.close(1000);
    this._socket = null;
  }

  _connect() {
    const url = new URL(this.url);
    if (this.lastEventId) url.searchParams.set("lastEventId", this.lastEventId);
    const socket = (this._socket = new WebSocket(url.href));
    socket.onopen = () => {
      if (this._socket !== socket) return;
      this.readyState = WebSocketSource.OPEN;
      this._failures = 0;
      this._dispatch(new Event("open"), this.onopen);
    };
    socket.onmessage = (message) => {
      if (this._socket !== socket) return;
      this._frame(JSON.parse(message.data));
    };
    socket.onclose = (closing) => {
      if (this._socket !== socket) return;
      this._socket = null;
      this.closeInfo = { code: closing.code, reason: closing.reason };
      if (this.readyState === WebSocketSource.CLOSED) return;
      if (STOP.has(closing.code)) {
        this.readyState = WebSocketSource.CLOSED;
      } else {
        this.readyState = WebSocketSource.CONNECTING;
        this._schedule(closing.code);
      }
      this._dispatch(new Event("error"), this.onerror);
    };
  }

  _frame(fields) {
    if (fields.retry !== undefined) this.retry = fields.retry;
    if (fields.id !== undefined) this.lastEventId = fields.id;
    if (fields.data === undefined) return; // as EventSource: an event without data is not dispatched
    const type = fields.event ?? "message";
    const event = new MessageEvent(type, { data: fields.data, lastEventId: this.lastEventId, origin: new URL(this.url).origin });
    this._dispatch(event, type === "message" ? this.onmessage : null);
  }

  _schedule(code) {
    // A planned end (1012) already told its client when to come back (`retry`): the first try waits that.
    const delay = Math.min(this.maxDelay, this.retry * 2 ** this._failures);
    this._failures += 1;
    const wait = code === 1012 && this._failures === 1 ? this.retry : delay / 2 + Math.random() * (delay / 2);
    this._timer = setTimeout(() => this._connect(), wait);
  }

  _dispatch(event, handler) {
    if (typeof handler === "function") handler.call(this, event);
    this.dispatchEvent(event);
  }
}

export default WebSocketSource;
