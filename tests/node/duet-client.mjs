// A duet client for Node.js 20, written from docs/protocol.md alone (sections 1 and 2), with no
// code shared with the Rust implementation. It exists to prove that the document is enough to
// implement a client; every decision the document drives cites the section it comes from.
//
// Value conventions of this module:
//   - frames are plain objects `{ type, ...fields }`; `type` and the field names are exactly the
//     names of docs/protocol.md §2 (`message_id`, `participant_id`, `resume_secret`, ...);
//   - `u8`/`u16`/`u32` fields are JS numbers; `u64` fields (`message_id`, `seq`, `nonce`) are
//     decoded as BigInt because they can exceed 2^53; the encoder takes a BigInt or a safe
//     non-negative integer number;
//   - `str` fields are JS strings; `bytes`/`bytes8` fields are decoded as Buffers and encoded from
//     any Uint8Array (or, for `payload` only, from a string, taken as UTF-8).

import WebSocket from 'ws';

/** The only session protocol version (§2, `join`: "A version other than 1 closes with 4003"). */
export const PROTOCOL_VERSION = 1;

/** Kind bytes (§2 tables "Client to edge" and "Edge to client"). */
export const KIND = Object.freeze({
  join: 0x01,
  send: 0x02,
  ping: 0x03,
  leave: 0x04,
  welcome: 0x81,
  participant_joined: 0x82,
  participant_left: 0x83,
  message: 0x84,
  ack: 0x85,
  error: 0x86,
  pong: 0x87,
});
const TYPE_OF_KIND = new Map(Object.entries(KIND).map(([type, kind]) => [kind, type]));

/** Participant roles (§2, participant encoding: "1 = host, 2 = guest"). */
export const ROLE = Object.freeze({ host: 1, guest: 2 });
/** `participant_left.reason` (§2: "0 left, 1 disconnected, 2 removed by the edge"). */
export const LEFT_REASON = Object.freeze({ left: 0, disconnected: 1, removed: 2 });
/** `error.code` values (§2, bullet on `error`). */
export const ERROR_CODE = Object.freeze({ unknown_recipient: 1, sent_to_self: 2 });
/** The session close codes of §2 "Close codes" (the 46xx link codes are not for clients). */
export const CLOSE = Object.freeze({
  normal: 1000,
  malformed: 4000,
  unknown_kind: 4001,
  too_large: 4002,
  bad_version: 4003,
  handshake_timeout: 4004,
  unexpected_frame: 4005,
  text_frame: 4006,
  token_invalid: 4100,
  token_expired: 4101,
  token_other_session: 4102,
  token_other_edge: 4103,
  keys_unavailable: 4104,
  session_ended: 4200,
  replaced: 4201,
  edge_at_capacity: 4202,
  slow_reader: 4300,
  edge_shutting_down: 4400,
  internal_error: 4500,
});

/**
 * What a client should do about a close code, from its range (§2 "Close codes": "A client that
 * meets an unknown code acts on its range").
 */
export function closeCodeAction(code) {
  if (code === 1000) return 'closed normally';
  const ranges = {
    40: 'fix the client',
    41: 'get a new token from the locator',
    42: 'the session is gone or refused',
    43: 'reconnect',
    44: 'ask the locator again',
    45: 'retry later',
    46: 'edge-to-locator link only',
  };
  return (code >= 4000 && code <= 4699 && ranges[Math.floor(code / 100)]) || 'unregistered code';
}

/**
 * A frame that does not decode. `reason` is one of 'truncated', 'trailing', 'bad_utf8',
 * 'bad_value' or 'unknown_kind'; `closeCode` is the close code §2 gives for it (4000, or 4001
 * for an unknown kind).
 */
export class DecodeError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = 'DecodeError';
    this.reason = reason;
    this.closeCode = reason === 'unknown_kind' ? CLOSE.unknown_kind : CLOSE.malformed;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding (§2: "All integers are big-endian and fixed width")
// ---------------------------------------------------------------------------------------------

const U64_MAX = (1n << 64n) - 1n;
const utf8 = new TextEncoder();
// fatal: invalid UTF-8 is a decoding error (§2: "invalid UTF-8 ... closes the connection with 4000").
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Collects big-endian fields, then concatenates them into one Buffer. */
class Writer {
  #chunks = [];

  #int(bytes, value, name) {
    if (!Number.isInteger(value) || value < 0 || value >= 2 ** (8 * bytes)) {
      throw new RangeError(`${name}: ${value} is not a u${8 * bytes}`);
    }
    const b = Buffer.alloc(bytes);
    b.writeUIntBE(value, 0, bytes);
    this.#chunks.push(b);
    return this;
  }
  u8(v, name) { return this.#int(1, v, name); }
  u16(v, name) { return this.#int(2, v, name); }
  u32(v, name) { return this.#int(4, v, name); }
  u64(v, name) {
    let big;
    if (typeof v === 'bigint') big = v;
    else if (Number.isSafeInteger(v)) big = BigInt(v);
    else throw new RangeError(`${name}: ${v} is not a u64 (use a BigInt above 2^53)`);
    if (big < 0n || big > U64_MAX) throw new RangeError(`${name}: ${v} is not a u64`);
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(big);
    this.#chunks.push(b);
    return this;
  }
  /** Raw bytes preceded by a length of `lenBytes` bytes (`bytes8`: 1, `str`: 2, `bytes`: 4). */
  #prefixed(lenBytes, data, name) {
    if (data.length >= 2 ** (8 * lenBytes)) {
      throw new RangeError(`${name}: ${data.length} bytes do not fit a u${8 * lenBytes} length`);
    }
    this.#int(lenBytes, data.length, `${name} length`);
    this.#chunks.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    return this;
  }
  /** `str`: `u16` byte length, then UTF-8. */
  str(s, name) {
    if (typeof s !== 'string') throw new TypeError(`${name}: expected a string`);
    // A lone surrogate would silently become U+FFFD; refuse it instead of sending other text.
    if (!s.isWellFormed()) throw new TypeError(`${name}: not well-formed Unicode`);
    return this.#prefixed(2, utf8.encode(s), name);
  }
  /** `bytes8`: `u8` byte length, then the bytes. */
  bytes8(b, name) { return this.#prefixed(1, asBytes(b, name), name); }
  /** `bytes`: `u32` byte length, then the bytes. */
  bytes(b, name) { return this.#prefixed(4, asBytes(b, name), name); }
  done() { return Buffer.concat(this.#chunks); }
}

function asBytes(b, name) {
  if (b instanceof Uint8Array) return b;
  if (b instanceof ArrayBuffer) return new Uint8Array(b);
  throw new TypeError(`${name}: expected bytes (Uint8Array or Buffer)`);
}

function writeParticipant(w, p) {
  w.u32(p.id, 'participant.id');
  if (p.role !== ROLE.host && p.role !== ROLE.guest) {
    throw new RangeError(`participant.role: ${p.role} is not 1 (host) or 2 (guest)`);
  }
  w.u8(p.role, 'participant.role');
  w.str(p.user_id, 'participant.user_id');
  w.str(p.display_name, 'participant.display_name');
}

/** Field writers of every kind, client and edge side (§2 tables). */
const ENCODERS = {
  join: (w, f) => w.u8(f.version ?? PROTOCOL_VERSION, 'version').str(f.token, 'token'),
  send: (w, f) =>
    w
      .u64(f.message_id ?? 0, 'message_id')
      .u32(f.to ?? 0, 'to')
      .bytes(typeof f.payload === 'string' ? utf8.encode(f.payload) : f.payload, 'payload'),
  ping: (w, f) => w.u64(f.nonce, 'nonce'),
  leave: () => {},
  welcome: (w, f) => {
    w.u8(f.version ?? PROTOCOL_VERSION, 'version')
      .u32(f.participant_id, 'participant_id')
      .u64(f.seq, 'seq')
      .bytes8(f.resume_secret, 'resume_secret')
      .u16(f.participants.length, 'count');
    for (const p of f.participants) writeParticipant(w, p);
  },
  participant_joined: (w, f) => {
    w.u64(f.seq, 'seq');
    writeParticipant(w, f.participant);
  },
  participant_left: (w, f) => {
    if (!Object.values(LEFT_REASON).includes(f.reason)) {
      throw new RangeError(`reason: ${f.reason} is not 0, 1 or 2`);
    }
    w.u64(f.seq, 'seq').u32(f.participant_id, 'participant_id').u8(f.reason, 'reason');
  },
  message: (w, f) =>
    w.u64(f.seq, 'seq').u32(f.from, 'from').u32(f.to, 'to').bytes(f.payload, 'payload'),
  ack: (w, f) => w.u64(f.message_id, 'message_id').u64(f.seq, 'seq'),
  error: (w, f) => w.u16(f.code, 'code').str(f.message, 'message'),
  pong: (w, f) => w.u64(f.nonce, 'nonce'),
};

/** Encodes a frame of any kind (client to edge or edge to client) into one binary message. */
export function encode(frame) {
  const kind = KIND[frame?.type];
  if (kind === undefined) throw new TypeError(`unknown frame type ${JSON.stringify(frame?.type)}`);
  const w = new Writer().u8(kind, 'kind');
  ENCODERS[frame.type](w, frame);
  return w.done();
}

// ---------------------------------------------------------------------------------------------
// Decoding (§2: "A message must contain exactly its fields: a truncated message, trailing
// bytes, invalid UTF-8 or an unknown enum value closes the connection with 4000; an unknown kind
// with 4001.")
// ---------------------------------------------------------------------------------------------

/** Reads big-endian fields, throwing a DecodeError on anything short. */
class Reader {
  #buf;
  #pos = 0;
  #type;

  constructor(buf, type) {
    this.#buf = buf;
    this.#type = type;
  }
  #take(n, name) {
    const left = this.#buf.length - this.#pos;
    if (n > left) {
      throw new DecodeError(
        'truncated',
        `${this.#type}: truncated at ${name} (needs ${n} bytes at offset ${this.#pos}, ${left} left)`,
      );
    }
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }
  u8(name) { return this.#take(1, name)[0]; }
  u16(name) { return this.#take(2, name).readUInt16BE(0); }
  u32(name) { return this.#take(4, name).readUInt32BE(0); }
  u64(name) { return this.#take(8, name).readBigUInt64BE(0); }
  str(name) {
    const raw = this.#take(this.u16(`${name} length`), name);
    try {
      return strictUtf8.decode(raw);
    } catch {
      throw new DecodeError('bad_utf8', `${this.#type}: ${name} is not valid UTF-8`);
    }
  }
  // Copies, so that a decoded frame does not pin (or alias) the websocket's receive buffer.
  bytes8(name) { return Buffer.from(this.#take(this.u8(`${name} length`), name)); }
  bytes(name) { return Buffer.from(this.#take(this.u32(`${name} length`), name)); }
  end() {
    const extra = this.#buf.length - this.#pos;
    if (extra !== 0) {
      throw new DecodeError('trailing', `${this.#type}: ${extra} trailing byte(s) after the last field`);
    }
  }
  bad(message) { return new DecodeError('bad_value', `${this.#type}: ${message}`); }
}

function readParticipant(r) {
  const id = r.u32('participant.id');
  const role = r.u8('participant.role');
  if (role !== ROLE.host && role !== ROLE.guest) {
    throw r.bad(`unknown participant role ${role} (1 = host, 2 = guest)`);
  }
  return { id, role, user_id: r.str('participant.user_id'), display_name: r.str('participant.display_name') };
}

/** Field readers of every kind, client and edge side (§2 tables). */
const DECODERS = {
  join: (r) => ({ version: r.u8('version'), token: r.str('token') }),
  send: (r) => ({ message_id: r.u64('message_id'), to: r.u32('to'), payload: r.bytes('payload') }),
  ping: (r) => ({ nonce: r.u64('nonce') }),
  leave: () => ({}),
  welcome: (r) => {
    const f = {
      version: r.u8('version'),
      participant_id: r.u32('participant_id'),
      seq: r.u64('seq'),
      resume_secret: r.bytes8('resume_secret'),
    };
    const count = r.u16('count');
    f.participants = [];
    for (let i = 0; i < count; i++) f.participants.push(readParticipant(r));
    return f;
  },
  participant_joined: (r) => ({ seq: r.u64('seq'), participant: readParticipant(r) }),
  participant_left: (r) => {
    const f = { seq: r.u64('seq'), participant_id: r.u32('participant_id'), reason: r.u8('reason') };
    if (!Object.values(LEFT_REASON).includes(f.reason)) {
      throw r.bad(`unknown reason ${f.reason} (0 left, 1 disconnected, 2 removed)`);
    }
    return f;
  },
  message: (r) => ({ seq: r.u64('seq'), from: r.u32('from'), to: r.u32('to'), payload: r.bytes('payload') }),
  ack: (r) => ({ message_id: r.u64('message_id'), seq: r.u64('seq') }),
  // `error.code` is deliberately not checked against the two known codes: the document calls it
  // a code, not an enum, and the connection stays open after an error (§2), so a client should
  // pass a code it does not know on rather than treat the frame as malformed.
  error: (r) => ({ code: r.u16('code'), message: r.str('message') }),
  pong: (r) => ({ nonce: r.u64('nonce') }),
};

/**
 * Decodes one binary message of any kind. `direction` restricts the accepted kinds:
 * 'edge' (edge to client, 0x81-0xff, what a client receives), 'client' (0x01-0x7f), or
 * undefined for both. A kind outside the direction is an unknown kind (§2: "Kinds 0x01-0x7f go
 * from client to edge, 0x81-0xff from edge to client").
 */
export function decode(data, direction) {
  const buf = toBuffer(data);
  if (buf.length === 0) throw new DecodeError('truncated', 'empty message: no kind byte');
  const kind = buf[0];
  const type = TYPE_OF_KIND.get(kind);
  const hex = `0x${kind.toString(16).padStart(2, '0')}`;
  if (type === undefined) throw new DecodeError('unknown_kind', `unknown frame kind ${hex}`);
  if ((direction === 'edge' && kind < 0x80) || (direction === 'client' && kind >= 0x80)) {
    throw new DecodeError('unknown_kind', `frame kind ${hex} (${type}) does not go ${direction === 'edge' ? 'from edge to client' : 'from client to edge'}`);
  }
  const r = new Reader(buf.subarray(1), type);
  const frame = { type, ...DECODERS[type](r) };
  r.end();
  return frame;
}

/** Decodes a message received from an edge (kinds 0x81-0xff only). */
export const decodeEdgeFrame = (data) => decode(data, 'edge');
/** Decodes a message a client sends (kinds 0x01-0x7f only). */
export const decodeClientFrame = (data) => decode(data, 'client');

function toBuffer(data) {
  if (Buffer.isBuffer(data)) return data;
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  // ws may hand over a list of fragments when binaryType is 'fragments'; we never ask for that.
  if (Array.isArray(data)) return Buffer.concat(data);
  throw new TypeError('expected binary data');
}

// ---------------------------------------------------------------------------------------------
// Placement API (§1): JSON over HTTP to the locator
// ---------------------------------------------------------------------------------------------

/** An error answer of the placement API (§1 "Errors"): HTTP status plus the stable `code`. */
export class PlacementError extends Error {
  constructor(status, code, message) {
    super(`placement API answered ${status} ${code}: ${message}`);
    this.name = 'PlacementError';
    this.status = status;
    this.code = code;
  }
}

async function place(url, body, expectedStatus) {
  let res;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body ?? {}),
    });
  } catch (e) {
    // undici says only "fetch failed"; the reason (ECONNREFUSED, ...) is in its cause.
    throw new Error(`POST ${url} failed: ${e.cause?.message ?? e.message}`, { cause: e });
  }
  const text = await res.text();
  let json;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    // §1: "Every error has the same shape and a stable code".
    const err = json?.error;
    if (typeof err?.code === 'string') throw new PlacementError(res.status, err.code, err.message ?? '');
    throw new PlacementError(res.status, 'unknown', `unexpected error body: ${text.slice(0, 200)}`);
  }
  if (res.status !== expectedStatus) {
    throw new PlacementError(res.status, 'unexpected_status', `expected ${expectedStatus}`);
  }
  // The answer shape of §1 ("Answer 201 Created").
  const ok =
    json &&
    typeof json.session_id === 'string' &&
    Number.isInteger(json.participant_id) &&
    (json.role === 'host' || json.role === 'guest') &&
    typeof json.edge?.url === 'string' &&
    /^wss?:\/\//.test(json.edge.url) &&
    typeof json.token === 'string';
  if (!ok) throw new PlacementError(res.status, 'bad_answer', `answer lacks fields of §1: ${text.slice(0, 300)}`);
  return json;
}

const base = (locatorUrl) => String(locatorUrl).replace(/\/+$/, '');

/**
 * `POST /api/v1/sessions`: starts a session as its host. `body` is optional
 * (`{ team, user: { id, name }, region }`). Resolves with the `201` answer
 * `{ session_id, participant_id, role, edge: { id, region, url }, token, expires_at }`.
 */
export function createSession(locatorUrl, body = {}) {
  return place(`${base(locatorUrl)}/api/v1/sessions`, body, 201);
}

/**
 * `POST /api/v1/sessions/{session_id}/join`: joins as a guest. Resolves with the `200` answer,
 * of the same shape as createSession's with `role` `"guest"`.
 */
export function joinSession(locatorUrl, sessionId, body = {}) {
  return place(`${base(locatorUrl)}/api/v1/sessions/${encodeURIComponent(sessionId)}/join`, body, 200);
}

// ---------------------------------------------------------------------------------------------
// Session connection (§2)
// ---------------------------------------------------------------------------------------------

/**
 * A joined session connection. Incoming frames after `welcome` are queued in arrival order;
 * read them with `await conn.next()` (null once the connection is closed and the queue is
 * drained) or `for await (const frame of conn)`. `conn.closed` resolves with `{ code, reason }`
 * when the socket closes, whoever closed it.
 */
export class Connection {
  #ws;
  #queue = [];
  #waiters = [];
  #isClosed = false;

  /** @internal use connect() */
  constructor(ws, welcome) {
    this.#ws = ws;
    this.welcome = welcome;
    /** Our own participant id, from `welcome`. */
    this.participantId = welcome.participant_id;
    /** Set when the socket closes: `{ code, reason }`. */
    this.closeInfo = null;
    /** The first local protocol error (an undecodable frame from the edge), if any. */
    this.protocolError = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        this.#isClosed = true;
        for (const w of this.#waiters.splice(0)) w(null);
        resolve(this.closeInfo);
      });
    });
    ws.on('message', (data, isBinary) => this.#onMessage(data, isBinary));
  }

  #onMessage(data, isBinary) {
    // §2: every message is one binary websocket message; the edge closes on a text message with
    // 4006, so we treat a text message from the edge the same way.
    if (!isBinary) return this.#fail(CLOSE.text_frame, new DecodeError('bad_value', 'text message from the edge'));
    let frame;
    try {
      frame = decodeEdgeFrame(data);
    } catch (e) {
      return this.#fail(e.closeCode ?? CLOSE.malformed, e);
    }
    // `welcome` only ever answers `join`, which we sent once.
    if (frame.type === 'welcome') return this.#fail(CLOSE.malformed, new DecodeError('bad_value', 'second welcome'));
    const waiter = this.#waiters.shift();
    if (waiter) waiter(frame);
    else this.#queue.push(frame);
  }

  #fail(code, error) {
    this.protocolError ??= error;
    this.#ws.close(code, error.message.slice(0, 120));
  }

  /**
   * The next incoming frame, or null once the connection is closed and nothing is left. With
   * `timeoutMs`, rejects if nothing arrives in time.
   */
  next(timeoutMs) {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift());
    if (this.#isClosed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      let timer;
      const waiter = (frame) => {
        clearTimeout(timer);
        resolve(frame);
      };
      this.#waiters.push(waiter);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          const i = this.#waiters.indexOf(waiter);
          if (i >= 0) this.#waiters.splice(i, 1);
          reject(new Error(`no frame from the edge within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      const frame = await this.next();
      if (frame === null) return;
      yield frame;
    }
  }

  #write(frame) {
    if (this.#ws.readyState !== WebSocket.OPEN) throw new Error(`cannot send ${frame.type}: the connection is not open`);
    this.#ws.send(encode(frame), { binary: true });
  }

  /**
   * `send`: `to` 0 (default) is everyone else, otherwise one participant's id; `messageId` 0
   * (default) is none, a non-zero id is echoed in an `ack` (§2). `payload`: bytes or a string
   * (sent as UTF-8).
   */
  send(payload, { to = 0, messageId = 0 } = {}) {
    this.#write({ type: 'send', message_id: messageId, to, payload });
  }

  /** `ping`: the edge answers with a `pong` carrying the same nonce (a u64). */
  ping(nonce) {
    this.#write({ type: 'ping', nonce });
  }

  /** `leave`: leave on purpose; the edge then closes the connection with 1000 (§2). */
  leave() {
    this.#write({ type: 'leave' });
  }

  /** Closes the socket from this side (without `leave`: others see us as disconnected). */
  close(code = 1000, reason = '') {
    this.#ws.close(code, reason);
  }

  /** Drops the socket at once, without a closing handshake. */
  terminate() {
    this.#ws.terminate();
  }
}

/** The edge closed (or the socket failed) before `welcome`. */
export class ConnectError extends Error {
  constructor(message, closeInfo) {
    super(message);
    this.name = 'ConnectError';
    /** `{ code, reason }` when the edge closed the socket, else null. */
    this.closeInfo = closeInfo;
  }
}

/**
 * Opens a websocket to `edgeUrl` (the placement answer's `edge.url`, used as is, §1), sends
 * `join(1, token)` and resolves with a Connection once `welcome` arrives. Rejects with a
 * ConnectError if the socket fails or closes first (its `closeInfo.code` then tells why, e.g.
 * 41xx for a token problem), or after `timeoutMs` without a welcome.
 */
export function connect(edgeUrl, token, { timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(edgeUrl);
    ws.binaryType = 'nodebuffer';
    let settled = false;
    const finish = (err, conn) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.off('message', onFirst);
      if (err) {
        if (ws.readyState === WebSocket.OPEN) ws.close(err.closeCode ?? 1000);
        else if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
        reject(err);
      } else {
        resolve(conn);
      }
    };
    const timer = setTimeout(() => finish(new ConnectError(`no welcome from ${edgeUrl} within ${timeoutMs} ms`, null)), timeoutMs);

    // `join` must be the first message (§2).
    ws.on('open', () => ws.send(encode({ type: 'join', version: PROTOCOL_VERSION, token }), { binary: true }));
    // Stays attached after the welcome too, so a later socket error is never an unhandled
    // 'error' event; 'close' always follows it and the Connection reports that.
    ws.on('error', (e) => finish(new ConnectError(`websocket to ${edgeUrl} failed: ${e.message}`, null)));
    ws.on('close', (code, reason) => {
      const info = { code, reason: reason.toString('utf8') };
      finish(new ConnectError(`edge closed the connection before welcome: ${code} ${info.reason} (${closeCodeAction(code)})`, info));
    });

    const onFirst = (data, isBinary) => {
      let frame;
      try {
        if (!isBinary) throw Object.assign(new DecodeError('bad_value', 'text message from the edge'), { closeCode: CLOSE.text_frame });
        frame = decodeEdgeFrame(data);
      } catch (e) {
        return finish(Object.assign(new ConnectError(`bad first frame from the edge: ${e.message}`, null), { closeCode: e.closeCode }));
      }
      // `welcome` answers `join` (§2); nothing else may come before it.
      if (frame.type !== 'welcome') {
        return finish(Object.assign(new ConnectError(`expected welcome, got ${frame.type}`, null), { closeCode: CLOSE.malformed }));
      }
      if (frame.version !== PROTOCOL_VERSION) {
        return finish(Object.assign(new ConnectError(`welcome has version ${frame.version}, this client speaks ${PROTOCOL_VERSION}`, null), { closeCode: CLOSE.bad_version }));
      }
      // The Connection's own listeners take over from here; frames in the same tick as the
      // welcome are delivered to them because listeners are attached synchronously.
      finish(null, new Connection(ws, frame));
    };
    ws.on('message', onFirst);
  });
}
