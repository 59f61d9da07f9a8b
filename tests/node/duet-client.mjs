// A duet client for Node.js, written from docs/protocol.md alone (no code shared with the Rust
// side). It exists to prove that the document is enough to implement the protocol.

import WebSocket from 'ws';

export const PROTOCOL_VERSION = 1;

// Kind bytes (docs/protocol.md, section 2).
export const KIND = {
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
};
const NAME_OF_KIND = Object.fromEntries(Object.entries(KIND).map(([k, v]) => [v, k]));

export const ROLE = { 1: 'host', 2: 'guest' };
const ROLE_BYTE = { host: 1, guest: 2 };

// ---------- encoding ----------

/** Appends big-endian fields to a growing list of chunks. */
class Writer {
  constructor() {
    this.chunks = [];
  }
  u8(v) {
    this.chunks.push(Buffer.from([v]));
    return this;
  }
  u16(v) {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    this.chunks.push(b);
    return this;
  }
  u32(v) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v);
    this.chunks.push(b);
    return this;
  }
  u64(v) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(v));
    this.chunks.push(b);
    return this;
  }
  /** `str`: u16 byte length, then UTF-8. */
  str(s) {
    const bytes = Buffer.from(s, 'utf8');
    if (bytes.length > 0xffff) throw new RangeError('string longer than 65535 bytes');
    return this.u16(bytes.length).raw(bytes);
  }
  /** `bytes8`: u8 length, then bytes. */
  bytes8(b) {
    if (b.length > 0xff) throw new RangeError('bytes8 longer than 255 bytes');
    return this.u8(b.length).raw(b);
  }
  /** `bytes`: u32 length, then bytes. */
  bytes(b) {
    return this.u32(b.length).raw(b);
  }
  raw(b) {
    this.chunks.push(Buffer.from(b));
    return this;
  }
  done() {
    return Buffer.concat(this.chunks);
  }
}

function toBytes(payload) {
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8');
  return Buffer.from(payload);
}

function writeParticipant(w, p) {
  const role = ROLE_BYTE[p.role];
  if (role === undefined) throw new RangeError(`unknown role ${p.role}`);
  return w.u32(p.id).u8(role).str(p.userId).str(p.displayName);
}

/** Encodes a frame given as `{ type, ...fields }` (client or edge side). */
export function encode(frame) {
  const w = new Writer();
  switch (frame.type) {
    case 'join':
      return w.u8(KIND.join).u8(frame.version ?? PROTOCOL_VERSION).str(frame.token).done();
    case 'send':
      return w
        .u8(KIND.send)
        .u64(frame.messageId ?? 0n)
        .u32(frame.to ?? 0)
        .bytes(toBytes(frame.payload))
        .done();
    case 'ping':
      return w.u8(KIND.ping).u64(frame.nonce).done();
    case 'leave':
      return w.u8(KIND.leave).done();
    case 'welcome':
      w.u8(KIND.welcome).u8(frame.version).u32(frame.participantId).u64(frame.seq).bytes8(frame.resumeSecret);
      w.u16(frame.participants.length);
      for (const p of frame.participants) writeParticipant(w, p);
      return w.done();
    case 'participant_joined':
      return writeParticipant(w.u8(KIND.participant_joined).u64(frame.seq), frame.participant).done();
    case 'participant_left':
      return w.u8(KIND.participant_left).u64(frame.seq).u32(frame.participantId).u8(frame.reason).done();
    case 'message':
      return w.u8(KIND.message).u64(frame.seq).u32(frame.from).u32(frame.to).bytes(toBytes(frame.payload)).done();
    case 'ack':
      return w.u8(KIND.ack).u64(frame.messageId).u64(frame.seq).done();
    case 'error':
      return w.u8(KIND.error).u16(frame.code).str(frame.message).done();
    case 'pong':
      return w.u8(KIND.pong).u64(frame.nonce).done();
    default:
      throw new TypeError(`unknown frame type ${frame.type}`);
  }
}

// ---------- decoding ----------

export class DecodeError extends Error {}

/** A strict cursor: every read names its field, so errors say where a frame ran short. */
class Reader {
  constructor(buf, kindName) {
    this.buf = buf;
    this.pos = 1;
    this.kindName = kindName;
  }
  need(n, field) {
    if (this.pos + n > this.buf.length) {
      throw new DecodeError(`${this.kindName} truncated at field ${field}`);
    }
  }
  u8(field) {
    this.need(1, field);
    return this.buf.readUInt8(this.pos++);
  }
  u16(field) {
    this.need(2, field);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(field) {
    this.need(4, field);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(field) {
    this.need(8, field);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  take(n, field) {
    this.need(n, field);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  str(field) {
    const b = this.take(this.u16(field), field);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(b);
    } catch {
      throw new DecodeError(`field ${field} is not valid UTF-8`);
    }
  }
  bytes8(field) {
    return Buffer.from(this.take(this.u8(field), field));
  }
  bytes(field) {
    return Buffer.from(this.take(this.u32(field), field));
  }
  participant() {
    const id = this.u32('participant.id');
    const roleByte = this.u8('participant.role');
    const role = ROLE[roleByte];
    if (!role) throw new DecodeError(`invalid role ${roleByte}`);
    return { id, role, userId: this.str('participant.user_id'), displayName: this.str('participant.display_name') };
  }
  finish() {
    if (this.pos !== this.buf.length) {
      throw new DecodeError(`${this.kindName} has ${this.buf.length - this.pos} trailing bytes`);
    }
  }
}

/** Decodes one frame (either direction) into `{ type, ...fields }`; u64 fields are BigInts. */
export function decode(data) {
  const buf = Buffer.from(data);
  if (buf.length === 0) throw new DecodeError('empty frame');
  const kind = buf[0];
  const name = NAME_OF_KIND[kind];
  if (!name) throw new DecodeError(`unknown frame kind 0x${kind.toString(16).padStart(2, '0')}`);
  const r = new Reader(buf, name);
  let frame;
  switch (kind) {
    case KIND.join:
      frame = { type: name, version: r.u8('version'), token: r.str('token') };
      break;
    case KIND.send:
      frame = { type: name, messageId: r.u64('message_id'), to: r.u32('to'), payload: r.bytes('payload') };
      break;
    case KIND.ping:
    case KIND.pong:
      frame = { type: name, nonce: r.u64('nonce') };
      break;
    case KIND.leave:
      frame = { type: name };
      break;
    case KIND.welcome: {
      frame = {
        type: name,
        version: r.u8('version'),
        participantId: r.u32('participant_id'),
        seq: r.u64('seq'),
        resumeSecret: r.bytes8('resume_secret'),
        participants: [],
      };
      const count = r.u16('count');
      for (let i = 0; i < count; i++) frame.participants.push(r.participant());
      break;
    }
    case KIND.participant_joined:
      frame = { type: name, seq: r.u64('seq'), participant: r.participant() };
      break;
    case KIND.participant_left: {
      frame = { type: name, seq: r.u64('seq'), participantId: r.u32('participant_id'), reason: r.u8('reason') };
      if (frame.reason > 2) throw new DecodeError(`invalid leave reason ${frame.reason}`);
      break;
    }
    case KIND.message:
      frame = { type: name, seq: r.u64('seq'), from: r.u32('from'), to: r.u32('to'), payload: r.bytes('payload') };
      break;
    case KIND.ack:
      frame = { type: name, messageId: r.u64('message_id'), seq: r.u64('seq') };
      break;
    case KIND.error:
      frame = { type: name, code: r.u16('code'), message: r.str('message') };
      break;
  }
  r.finish();
  return frame;
}

// ---------- placement API ----------

export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

async function post(url, body) {
  const resp = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body ?? {}),
  });
  const json = await resp.json().catch(() => null);
  if (!resp.ok) {
    throw new ApiError(resp.status, json?.error?.code ?? 'unknown', json?.error?.message ?? resp.statusText);
  }
  return json;
}

/** `POST /api/v1/sessions`: start a session as host. */
export function createSession(locatorUrl, body = {}) {
  return post(`${locatorUrl.replace(/\/$/, '')}/api/v1/sessions`, body);
}

/** `POST /api/v1/sessions/{id}/join`: join as a guest. */
export function joinSession(locatorUrl, sessionId, body = {}) {
  return post(`${locatorUrl.replace(/\/$/, '')}/api/v1/sessions/${encodeURIComponent(sessionId)}/join`, body);
}

// ---------- connections ----------

/** An open session connection: decoded events arrive in an async queue. */
export class Connection {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.closed = null; // { code, reason } once closed
    ws.on('message', (data, isBinary) => {
      if (!isBinary) return this.push({ type: 'protocol_error', error: new DecodeError('text frame from the edge') });
      try {
        this.push(decode(data));
      } catch (error) {
        this.push({ type: 'protocol_error', error });
      }
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.push({ type: 'closed', ...this.closed });
    });
    ws.on('error', (error) => this.push({ type: 'socket_error', error }));
  }

  push(event) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(event);
    else this.queue.push(event);
  }

  /** The next event, or a rejection after `timeoutMs`. */
  next(timeoutMs = 10000) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== settle);
        reject(new Error(`no event within ${timeoutMs} ms`));
      }, timeoutMs);
      const settle = (event) => {
        clearTimeout(timer);
        resolve(event);
      };
      this.waiters.push(settle);
    });
  }

  /** Waits for the next event of `type`, failing on anything else. */
  async expect(type, timeoutMs) {
    const event = await this.next(timeoutMs);
    if (event.type !== type) {
      throw new Error(`expected ${type}, got ${describe(event)}`);
    }
    return event;
  }

  sendRaw(bytes) {
    this.ws.send(bytes, { binary: true });
  }

  /** Sends to everyone else (`to` 0) or one participant; a non-zero `messageId` asks for an ack. */
  send(payload, { to = 0, messageId = 0n } = {}) {
    this.sendRaw(encode({ type: 'send', to, messageId: BigInt(messageId), payload }));
  }

  ping(nonce) {
    this.sendRaw(encode({ type: 'ping', nonce: BigInt(nonce) }));
  }

  leave() {
    this.sendRaw(encode({ type: 'leave' }));
  }

  close() {
    this.ws.close(1000);
  }
}

export function describe(event) {
  return JSON.stringify(event, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
}

/** Opens a websocket to `edgeUrl` without sending anything. */
export function open(edgeUrl) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(edgeUrl);
    const conn = new Connection(ws);
    ws.once('open', () => resolve(conn));
    ws.once('error', reject);
  });
}

/** Connects, sends `join` with `token`, and resolves with `{ conn, welcome }`. */
export async function connect(edgeUrl, token, timeoutMs = 10000) {
  const conn = await open(edgeUrl);
  conn.sendRaw(encode({ type: 'join', version: PROTOCOL_VERSION, token }));
  const first = await conn.next(timeoutMs);
  if (first.type === 'closed') {
    const err = new Error(`join refused: close ${first.code} ${first.reason}`);
    err.closeCode = first.code;
    throw err;
  }
  if (first.type !== 'welcome') throw new Error(`expected welcome, got ${describe(first)}`);
  return { conn, welcome: first };
}
