// A duet client for Node.js 20, written from docs/protocol.md alone (sections 1, 2 and 2b), with
// no code shared with the Rust implementation. It exists to prove that the document is enough to
// implement a client; every decision the document drives cites the section it comes from.
//
// Value conventions of this module:
//   - frames are plain objects `{ type, ...fields }`; `type` and the field names are exactly the
//     names of docs/protocol.md §2 (`message_id`, `participant_id`, `resume_secret`, ...);
//   - `u8`/`u16`/`u32` fields are JS numbers; `u64` fields (`message_id`, `seq`, `nonce`,
//     `last_seq`) are decoded as BigInt because they can exceed 2^53; the encoder takes a BigInt
//     or a safe non-negative integer number;
//   - `str` fields are JS strings; `bytes`/`bytes8` fields are decoded as Buffers and encoded from
//     any Uint8Array (or, for `payload` only, from a string, taken as UTF-8);
//   - a participant record is `{ id, role, user_id, display_name }`; `welcome.participants` is an
//     array of them and `welcome.away` the array of the `away_count` participant ids;
//     `participant_joined` and `join_request` hold theirs in `participant`;
//   - media frames (§2 "Media (version 3)") follow the same rules; `text` fields (`sdp`) are JS
//     strings. Two names go both ways with different fields: `media_offer` (client: `sdp`; edge:
//     `offer_id`, `sdp`) and `media_answer` (client: `offer_id`, `sdp`; edge: `sdp`). Their kinds
//     are in two tables (CLIENT_KIND, EDGE_KIND), and encode() needs the direction for them
//     (`encode(frame, 'edge')`); decode() tells them apart by the kind byte. `source` and
//     `reason` are the numbers of TRACK_SOURCE and MEDIA_CLOSE_REASON; `muted` is decoded as 0 or
//     1 (the encoder also takes a boolean);
//   - presence frames (§2b) have their own kind table (PRESENCE_KIND), encoder (encodePresence)
//     and decoder (decodePresence). The two protocols run on different websockets, each with its
//     own kinds: a presence kind is not a session kind (0x91 and 0x92, a presence `snapshot` and
//     `pong`, are the session's `track_muted` and `media_closed` since version 3). A `snapshot` is `{ type, seq, members, sessions }`, `members` an array
//     of `{ user_id, display_name, connections }` and `sessions` an array of session id strings.

import WebSocket from 'ws';

/**
 * The session protocol version this client speaks unless told otherwise: 2, everything but media
 * (§2 "Versions and enums": "Version 2 is still accepted: a version-2 participant takes part in
 * everything but media, never receives a media kind"). connect() and resume() take `version`.
 */
export const PROTOCOL_VERSION = 2;
/** The version that added media signalling (§2 "Versions and enums", §2 "Media (version 3)"). */
export const MEDIA_PROTOCOL_VERSION = 3;
/** The versions an edge accepts (§2 "Close codes", 4003: "the `version` ... is not 2 or 3"). */
export const PROTOCOL_VERSIONS = Object.freeze([2, 3]);

/** Kind bytes from client to edge (§2 table "Client to edge"). */
export const CLIENT_KIND = Object.freeze({
  join: 0x01,
  send: 0x02,
  ping: 0x03,
  leave: 0x04,
  resume: 0x05,
  end_session: 0x06,
  admit: 0x07,
  media_offer: 0x08,
  media_answer: 0x09,
  media_candidate: 0x0a,
  track_publish: 0x0b,
  track_mute: 0x0c,
  media_leave: 0x0d,
});
/** Kind bytes from edge to client (§2 table "Edge to client"). */
export const EDGE_KIND = Object.freeze({
  welcome: 0x81,
  participant_joined: 0x82,
  participant_left: 0x83,
  message: 0x84,
  ack: 0x85,
  error: 0x86,
  pong: 0x87,
  resumed: 0x88,
  participant_away: 0x89,
  participant_back: 0x8a,
  join_request: 0x8b,
  waiting: 0x8c,
  media_answer: 0x8d,
  media_offer: 0x8e,
  track_published: 0x8f,
  track_unpublished: 0x90,
  track_muted: 0x91,
  media_closed: 0x92,
});
const TYPE_OF_KIND = new Map(
  [...Object.entries(CLIENT_KIND), ...Object.entries(EDGE_KIND)].map(([type, kind]) => [kind, type]),
);
/**
 * The kinds version 3 added (§2 "Versions and enums": "kinds `0x08`-`0x0d` and `0x8d`-`0x92`"). A
 * version-2 participant "never receives a media kind", so this client treats one arriving on a
 * version-2 connection as an unknown kind.
 */
export const MEDIA_KINDS = Object.freeze(
  new Set([...Object.values(CLIENT_KIND), ...Object.values(EDGE_KIND)].filter((k) => (k >= 0x08 && k <= 0x0d) || (k >= 0x8d && k <= 0x92))),
);

/**
 * The session events: the frames that carry a `seq` of the session's one sequence (§2, bullet
 * "Sequence numbers": "`participant_joined`, `participant_left`, `participant_away`,
 * `participant_back`, `message`"). `ack` and `resumed` carry a seq too but are not events.
 */
export const SEQUENCED_EVENTS = Object.freeze(
  new Set(['participant_joined', 'participant_left', 'participant_away', 'participant_back', 'message']),
);

/** Participant roles (§2, participant encoding: "1 = host, 2 = guest"). */
export const ROLE = Object.freeze({ host: 1, guest: 2 });
/**
 * `participant_left.reason` (§2: "0 left, 1 disconnected and did not come back in time, 2 removed
 * by the edge").
 */
export const LEFT_REASON = Object.freeze({ left: 0, disconnected: 1, removed: 2 });
/** `admit.admit` (§2, "Client to edge": "1 admit, 0 refuse"). */
export const ADMIT = Object.freeze({ refuse: 0, admit: 1 });
/**
 * `error.code` values (§2, bullet on `error`). The set is open ("`error.code` is open: unknown
 * codes are still non-fatal errors").
 */
export const ERROR_CODE = Object.freeze({
  /** `send` named a participant that holds no place in the session. */
  unknown_recipient: 1,
  /** `send` named the sender itself. */
  sent_to_self: 2,
  /** `end_session` or `admit` from a guest. */
  not_host: 3,
  /** `admit` for a participant that is not waiting. */
  not_waiting: 4,
  /** `send` from a guest still waiting for approval. */
  awaiting_approval: 5,
  // Media frames (§2 "Media (version 3)", "Refusals"):
  /** Media is off on this edge, or the guest is still waiting for the host's approval. */
  media_unavailable: 6,
  /**
   * An offer, answer or candidate the edge could not apply (the message starts with `offer:`,
   * `answer:` or `candidate:`), too many tracks, or the edge's media too busy (send it again).
   */
  media_rejected: 7,
  /** `track_mute` for a mid that publishes nothing, or an answer or candidate before any offer. */
  unknown_track: 8,
});
/** `track_publish.source` and `track_published.source` (§2 tables: "1 microphone, 2 camera, 3 screen, 4 screen audio"). */
export const TRACK_SOURCE = Object.freeze({ microphone: 1, camera: 2, screen: 3, screen_audio: 4 });
/** `media_closed.reason` (§2 table "Edge to client": "0 left, 1 disconnected, 2 failed, 3 stopped"). */
export const MEDIA_CLOSE_REASON = Object.freeze({ left: 0, disconnected: 1, failed: 2, stopped: 3 });
/** The largest `text` (SDP) in bytes (§2 notation table: "at most 524,288 bytes"). */
export const MAX_TEXT_BYTES = 524_288;
/** The error codes that answer a `send` (§2: "Every `send` gets at most one answer"). */
const SEND_ERROR_CODES = new Set([ERROR_CODE.unknown_recipient, ERROR_CODE.sent_to_self, ERROR_CODE.awaiting_approval]);

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
  too_many_messages: 4007,
  token_invalid: 4100,
  token_expired: 4101,
  token_other_session: 4102,
  token_other_edge: 4103,
  keys_unavailable: 4104,
  resync_needed: 4105,
  resume_refused: 4106,
  session_ended: 4200,
  replaced: 4201,
  edge_at_capacity: 4202,
  ended_by_host: 4203,
  session_idle: 4204,
  session_full: 4205,
  not_admitted: 4206,
  host_gone: 4207,
  slow_reader: 4300,
  connection_idle: 4301,
  edge_shutting_down: 4400,
  internal_error: 4500,
});

/**
 * Whether a connection closed with `code` may come back with `resume`: the codes §2 says so of
 * (4300 "slow reader ... resume", 4301 "connection idle ... resume"), any other 43xx ("43xx
 * reconnect"), and a standard code other than 1000 (1006, ...: "reconnect and, if that fails,
 * ask the locator again"; the Resume section's "a connection can drop"). Not 1000 (after
 * `leave`, the place is given up) nor any other 4xxx.
 */
export function canResume(code) {
  if (code === CLOSE.normal) return false;
  if (code >= 4300 && code <= 4399) return true;
  return code > 1000 && code <= 2999;
}

/** The name of each session close code, from §2 "Close codes" (for messages). */
export const CLOSE_NAME = Object.freeze({
  1000: 'normal',
  4000: 'malformed frame',
  4001: 'unknown frame kind',
  4002: 'message too large',
  4003: 'unsupported protocol version',
  4004: 'handshake timeout',
  4005: 'unexpected frame',
  4006: 'text frames are not supported',
  4007: 'too many messages per second',
  4100: 'token invalid',
  4101: 'token expired',
  4102: 'token is for another session',
  4103: 'token is for another edge',
  4104: 'verification keys unavailable',
  4105: 'resync needed',
  4106: 'resume refused',
  4200: 'session ended',
  4201: 'replaced by a newer connection',
  4202: 'edge at capacity',
  4203: 'session ended by the host',
  4204: 'session idle',
  4205: 'session full',
  4206: 'not admitted',
  4207: 'host gone',
  4300: 'slow reader',
  4301: 'connection idle',
  4400: 'edge shutting down',
  4500: 'internal error',
});

/**
 * What a client should do about a close code, from its range (§2 "Close codes": "A client that
 * meets an unknown 4xxx code acts on its range"). Known codes can be more specific (see CLOSE,
 * canResume).
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

/** `4106 resume refused (...)`: a close code with its name and what to do, for messages. */
export function describeClose(code) {
  const name = CLOSE_NAME[code];
  return `${code}${name ? ` ${name}` : ''} (${closeCodeAction(code)})`;
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
  /** `text`: `u32` byte length, then UTF-8, at most MAX_TEXT_BYTES. */
  text(s, name) {
    if (typeof s !== 'string') throw new TypeError(`${name}: expected a string`);
    if (!s.isWellFormed()) throw new TypeError(`${name}: not well-formed Unicode`);
    const bytes = utf8.encode(s);
    if (bytes.length > MAX_TEXT_BYTES) throw new RangeError(`${name}: ${bytes.length} bytes, over the ${MAX_TEXT_BYTES} a text holds`);
    return this.#prefixed(4, bytes, name);
  }
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

function checkAdmit(admit) {
  if (admit !== ADMIT.admit && admit !== ADMIT.refuse) {
    throw new RangeError(`admit: ${admit} is not 1 (admit) or 0 (refuse)`);
  }
}

/** A `muted: u8` from 0, 1 or a boolean (§2: "1 muted, 0 not"). */
function mutedByte(muted) {
  if (muted === true || muted === 1) return 1;
  if (muted === false || muted === 0) return 0;
  throw new RangeError(`muted: ${muted} is not 1 (muted) or 0 (not)`);
}

function checkSource(source) {
  if (!Object.values(TRACK_SOURCE).includes(source)) {
    throw new RangeError(`source: ${source} is not 1 (microphone), 2 (camera), 3 (screen) or 4 (screen audio)`);
  }
}

/** Field writers of the client kinds (§2 table "Client to edge"). */
const CLIENT_ENCODERS = {
  join: (w, f) => w.u8(f.version ?? PROTOCOL_VERSION, 'version').str(f.token, 'token'),
  send: (w, f) =>
    w
      .u64(f.message_id ?? 0, 'message_id')
      .u32(f.to ?? 0, 'to')
      .bytes(typeof f.payload === 'string' ? utf8.encode(f.payload) : f.payload, 'payload'),
  ping: (w, f) => w.u64(f.nonce, 'nonce'),
  leave: () => {},
  resume: (w, f) =>
    w
      .u8(f.version ?? PROTOCOL_VERSION, 'version')
      .u32(f.participant_id, 'participant_id')
      .bytes8(f.resume_secret, 'resume_secret')
      .u64(f.last_seq, 'last_seq'),
  end_session: () => {},
  admit: (w, f) => {
    checkAdmit(f.admit);
    w.u32(f.participant_id, 'participant_id').u8(f.admit, 'admit');
  },
  media_offer: (w, f) => w.text(f.sdp, 'sdp'),
  media_answer: (w, f) => w.u32(f.offer_id, 'offer_id').text(f.sdp, 'sdp'),
  media_candidate: (w, f) => w.str(f.candidate, 'candidate'),
  track_publish: (w, f) => {
    checkSource(f.source);
    w.str(f.mid, 'mid').u8(f.source, 'source');
  },
  track_mute: (w, f) => w.str(f.mid, 'mid').u8(mutedByte(f.muted), 'muted'),
  media_leave: () => {},
};

/** Field writers of the edge kinds (§2 table "Edge to client"). */
const EDGE_ENCODERS = {
  welcome: (w, f) => {
    w.u8(f.version ?? PROTOCOL_VERSION, 'version')
      .u32(f.participant_id, 'participant_id')
      .u64(f.seq, 'seq')
      .bytes8(f.resume_secret, 'resume_secret')
      .u16(f.participants.length, 'count');
    for (const p of f.participants) writeParticipant(w, p);
    const away = f.away ?? [];
    w.u16(away.length, 'away_count');
    for (const id of away) w.u32(id, 'away participant_id');
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
  resumed: (w, f) => w.u64(f.seq, 'seq').u32(f.replayed, 'replayed'),
  participant_away: (w, f) => w.u64(f.seq, 'seq').u32(f.participant_id, 'participant_id'),
  participant_back: (w, f) => w.u64(f.seq, 'seq').u32(f.participant_id, 'participant_id'),
  join_request: (w, f) => writeParticipant(w, f.participant),
  waiting: () => {},
  media_answer: (w, f) => w.text(f.sdp, 'sdp'),
  media_offer: (w, f) => w.u32(f.offer_id, 'offer_id').text(f.sdp, 'sdp'),
  track_published: (w, f) => {
    checkSource(f.source);
    w.u32(f.track_id, 'track_id')
      .u32(f.participant_id, 'participant_id')
      .u8(f.source, 'source')
      .u8(mutedByte(f.muted), 'muted')
      .str(f.mid, 'mid');
  },
  track_unpublished: (w, f) => w.u32(f.track_id, 'track_id'),
  track_muted: (w, f) => w.u32(f.track_id, 'track_id').u8(mutedByte(f.muted), 'muted'),
  media_closed: (w, f) => {
    if (!Object.values(MEDIA_CLOSE_REASON).includes(f.reason)) {
      throw new RangeError(`reason: ${f.reason} is not 0, 1, 2 or 3`);
    }
    w.u8(f.reason, 'reason');
  },
};

/**
 * Encodes a frame into one binary message. `direction` is 'client' (client to edge), 'edge'
 * (edge to client) or undefined: then the frame's type decides, which it cannot for
 * `media_offer` and `media_answer` (both directions, with different fields), so those throw a
 * TypeError without a direction.
 */
export function encode(frame, direction) {
  const type = frame?.type;
  if (direction !== undefined && direction !== 'client' && direction !== 'edge') {
    throw new TypeError(`direction ${JSON.stringify(direction)} is not 'client' or 'edge'`);
  }
  const inClient = Object.hasOwn(CLIENT_KIND, type ?? '');
  const inEdge = Object.hasOwn(EDGE_KIND, type ?? '');
  if (!inClient && !inEdge) throw new TypeError(`unknown frame type ${JSON.stringify(type)}`);
  const side = direction ?? (inClient && inEdge ? null : inClient ? 'client' : 'edge');
  if (side === null) throw new TypeError(`${type} goes both ways: say encode(frame, 'client') or encode(frame, 'edge')`);
  const [kinds, encoders] = side === 'client' ? [CLIENT_KIND, CLIENT_ENCODERS] : [EDGE_KIND, EDGE_ENCODERS];
  if (!Object.hasOwn(kinds, type)) throw new TypeError(`${type} does not go ${side === 'client' ? 'from client to edge' : 'from edge to client'}`);
  const w = new Writer().u8(kinds[type], 'kind');
  encoders[type](w, frame);
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
  text(name) {
    const length = this.u32(`${name} length`);
    if (length > MAX_TEXT_BYTES) throw this.bad(`${name} declares ${length} bytes, over the ${MAX_TEXT_BYTES} a text holds`);
    const raw = this.#take(length, name);
    try {
      return strictUtf8.decode(raw);
    } catch {
      throw new DecodeError('bad_utf8', `${this.#type}: ${name} is not valid UTF-8`);
    }
  }
  /** A `muted: u8`: 0 or 1, anything else an unknown enum value. */
  muted(name) {
    const v = this.u8(name);
    if (v !== 0 && v !== 1) throw this.bad(`unknown ${name} value ${v} (1 muted, 0 not)`);
    return v;
  }
  /** A `source: u8` of TRACK_SOURCE. */
  source(name) {
    const v = this.u8(name);
    if (!Object.values(TRACK_SOURCE).includes(v)) throw this.bad(`unknown ${name} ${v} (1 microphone, 2 camera, 3 screen, 4 screen audio)`);
    return v;
  }
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

/** Field readers of the client kinds (§2 table "Client to edge"). */
const CLIENT_DECODERS = {
  join: (r) => ({ version: r.u8('version'), token: r.str('token') }),
  send: (r) => ({ message_id: r.u64('message_id'), to: r.u32('to'), payload: r.bytes('payload') }),
  ping: (r) => ({ nonce: r.u64('nonce') }),
  leave: () => ({}),
  resume: (r) => ({
    version: r.u8('version'),
    participant_id: r.u32('participant_id'),
    resume_secret: r.bytes8('resume_secret'),
    last_seq: r.u64('last_seq'),
  }),
  end_session: () => ({}),
  admit: (r) => {
    const f = { participant_id: r.u32('participant_id'), admit: r.u8('admit') };
    // §2: "any `admit` byte other than 0 or 1 closes with 4000".
    if (f.admit !== ADMIT.admit && f.admit !== ADMIT.refuse) {
      throw r.bad(`unknown admit value ${f.admit} (1 admit, 0 refuse)`);
    }
    return f;
  },
  media_offer: (r) => ({ sdp: r.text('sdp') }),
  media_answer: (r) => ({ offer_id: r.u32('offer_id'), sdp: r.text('sdp') }),
  media_candidate: (r) => ({ candidate: r.str('candidate') }),
  track_publish: (r) => ({ mid: r.str('mid'), source: r.source('source') }),
  track_mute: (r) => ({ mid: r.str('mid'), muted: r.muted('muted') }),
  media_leave: () => ({}),
};

/** Field readers of the edge kinds (§2 table "Edge to client"). */
const EDGE_DECODERS = {
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
    const awayCount = r.u16('away_count');
    f.away = [];
    for (let i = 0; i < awayCount; i++) f.away.push(r.u32('away participant_id'));
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
  // `error.code` is deliberately not checked against the known codes: §2 says "`error.code` is
  // open: unknown codes are still non-fatal errors".
  error: (r) => ({ code: r.u16('code'), message: r.str('message') }),
  pong: (r) => ({ nonce: r.u64('nonce') }),
  resumed: (r) => ({ seq: r.u64('seq'), replayed: r.u32('replayed') }),
  participant_away: (r) => ({ seq: r.u64('seq'), participant_id: r.u32('participant_id') }),
  participant_back: (r) => ({ seq: r.u64('seq'), participant_id: r.u32('participant_id') }),
  join_request: (r) => ({ participant: readParticipant(r) }),
  waiting: () => ({}),
  media_answer: (r) => ({ sdp: r.text('sdp') }),
  media_offer: (r) => ({ offer_id: r.u32('offer_id'), sdp: r.text('sdp') }),
  track_published: (r) => ({
    track_id: r.u32('track_id'),
    participant_id: r.u32('participant_id'),
    source: r.source('source'),
    muted: r.muted('muted'),
    mid: r.str('mid'),
  }),
  track_unpublished: (r) => ({ track_id: r.u32('track_id') }),
  track_muted: (r) => ({ track_id: r.u32('track_id'), muted: r.muted('muted') }),
  media_closed: (r) => {
    const f = { reason: r.u8('reason') };
    if (!Object.values(MEDIA_CLOSE_REASON).includes(f.reason)) {
      throw r.bad(`unknown reason ${f.reason} (0 left, 1 disconnected, 2 failed, 3 stopped)`);
    }
    return f;
  },
};

/**
 * Decodes one binary message of any kind. `direction` restricts the accepted kinds:
 * 'edge' (edge to client, 0x81-0xff, what a client receives), 'client' (0x01-0x7f), or
 * undefined for both. A kind outside the direction is an unknown kind (§2: "Kinds 0x01-0x7f go
 * from client to edge, 0x81-0xff from edge to client").
 */
export function decode(data, direction) {
  return decodeWith(data, direction, TYPE_OF_KIND, (kind) => (kind < 0x80 ? CLIENT_DECODERS : EDGE_DECODERS), '');
}

/**
 * Decodes one message with a protocol's kind table (`typeOfKind`) and field readers
 * (`decodersOf(kind)`, the readers of that kind's direction).
 */
function decodeWith(data, direction, typeOfKind, decodersOf, protocol) {
  const buf = toBuffer(data);
  if (buf.length === 0) throw new DecodeError('truncated', 'empty message: no kind byte');
  const kind = buf[0];
  const type = typeOfKind.get(kind);
  const hex = `0x${kind.toString(16).padStart(2, '0')}`;
  if (type === undefined) throw new DecodeError('unknown_kind', `unknown ${protocol}frame kind ${hex}`);
  if ((direction === 'edge' && kind < 0x80) || (direction === 'client' && kind >= 0x80)) {
    throw new DecodeError('unknown_kind', `${protocol}frame kind ${hex} (${type}) does not go ${direction === 'edge' ? 'from edge to client' : 'from client to edge'}`);
  }
  const r = new Reader(buf.subarray(1), type);
  const frame = { type, ...decodersOf(kind)[type](r) };
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
// Presence protocol (§2b): "Framing, integer and string encodings, size and idle limits, text
// frames (4006), unknown kinds (4001) and malformed frames (4000) are exactly as in §2", with the
// kinds of its own table.
// ---------------------------------------------------------------------------------------------

/** The presence protocol version this client speaks (§2b: `hello` "`version: u8` (1)"). */
export const PRESENCE_VERSION = 1;

/** Kind bytes of the presence protocol (§2b table). */
export const PRESENCE_KIND = Object.freeze({
  hello: 0x11,
  ping: 0x12,
  snapshot: 0x91,
  pong: 0x92,
});
const PRESENCE_TYPE_OF_KIND = new Map(Object.entries(PRESENCE_KIND).map(([type, kind]) => [kind, type]));

/** §2b: "the largest message a client may send is 16 KiB" (the whole message, kind byte included, as in §2). */
export const PRESENCE_MAX_CLIENT_MESSAGE_BYTES = 16 * 1024;
/** §2b: the team's live sessions in a snapshot are "at most 500". */
export const PRESENCE_MAX_SESSIONS = 500;

/** Field writers of every presence kind, client and edge side (§2b table). */
const PRESENCE_ENCODERS = {
  hello: (w, f) => w.u8(f.version ?? PRESENCE_VERSION, 'version').str(f.token, 'token'),
  ping: (w, f) => w.u64(f.nonce, 'nonce'),
  snapshot: (w, f) => {
    w.u64(f.seq, 'seq').u16(f.members.length, 'member_count');
    for (const m of f.members) {
      w.str(m.user_id, 'member.user_id').str(m.display_name, 'member.display_name').u16(m.connections, 'member.connections');
    }
    w.u16(f.sessions.length, 'session_count');
    for (const id of f.sessions) w.str(id, 'session_id');
  },
  pong: (w, f) => w.u64(f.nonce, 'nonce'),
};

/** Field readers of every presence kind, client and edge side (§2b table). */
const PRESENCE_DECODERS = {
  hello: (r) => ({ version: r.u8('version'), token: r.str('token') }),
  ping: (r) => ({ nonce: r.u64('nonce') }),
  snapshot: (r) => {
    const f = { seq: r.u64('seq') };
    const memberCount = r.u16('member_count');
    f.members = [];
    for (let i = 0; i < memberCount; i++) {
      f.members.push({
        user_id: r.str('member.user_id'),
        display_name: r.str('member.display_name'),
        connections: r.u16('member.connections'),
      });
    }
    const sessionCount = r.u16('session_count');
    f.sessions = [];
    for (let i = 0; i < sessionCount; i++) f.sessions.push(r.str('session_id'));
    return f;
  },
  pong: (r) => ({ nonce: r.u64('nonce') }),
};

/** Encodes a presence frame of any kind (client to edge or edge to client) into one binary message. */
export function encodePresence(frame) {
  const kind = PRESENCE_KIND[frame?.type];
  if (kind === undefined) throw new TypeError(`unknown presence frame type ${JSON.stringify(frame?.type)}`);
  const w = new Writer().u8(kind, 'kind');
  PRESENCE_ENCODERS[frame.type](w, frame);
  return w.done();
}

/**
 * Encodes a presence frame this client sends, refusing one over the 16 KiB a client may send
 * (§2b) with a RangeError instead of letting the edge close the connection.
 */
function encodePresenceToSend(frame) {
  const bytes = encodePresence(frame);
  if (bytes.length > PRESENCE_MAX_CLIENT_MESSAGE_BYTES) {
    throw new RangeError(`${frame.type}: ${bytes.length} bytes, over the ${PRESENCE_MAX_CLIENT_MESSAGE_BYTES} bytes a presence client may send (§2b)`);
  }
  return bytes;
}

/**
 * Decodes one presence message, as strictly as decode() does session messages. `direction`:
 * 'edge' (0x81-0xff), 'client' (0x01-0x7f) or undefined for both. A session kind (0x01, 0x81, ...)
 * is an unknown kind here: §2b's table is the presence protocol's whole list.
 */
export function decodePresence(data, direction) {
  return decodeWith(data, direction, PRESENCE_TYPE_OF_KIND, () => PRESENCE_DECODERS, 'presence ');
}

/** Decodes a presence message received from an edge (`snapshot`, `pong`). */
export const decodePresenceEdgeFrame = (data) => decodePresence(data, 'edge');
/** Decodes a presence message a client sends (`hello`, `ping`). */
export const decodePresenceClientFrame = (data) => decodePresence(data, 'client');

/**
 * Checks what §2b says of one snapshot's content, beyond its encoding; throws a DecodeError
 * ('bad_value', close code 4000) on a violation:
 *   - "who is online now (each user once, sorted by `user_id` ...": user ids strictly ascending.
 *     The document does not say which order; this client takes the order of the UTF-8 bytes
 *     (the same as Unicode code point order), not JavaScript's UTF-16 order;
 *   - "with how many presence connections it has open": someone online has at least one;
 *   - "the team's live sessions (newest first, at most 500 ...)": at most 500, each once.
 */
export function checkSnapshot(snapshot) {
  for (let i = 0; i < snapshot.members.length; i++) {
    const m = snapshot.members[i];
    if (m.connections < 1) throw violation(`snapshot: member ${JSON.stringify(m.user_id)} is online with ${m.connections} connections`);
    if (i > 0) {
      const prev = snapshot.members[i - 1].user_id;
      const order = Buffer.compare(Buffer.from(prev, 'utf8'), Buffer.from(m.user_id, 'utf8'));
      if (order === 0) throw violation(`snapshot: member ${JSON.stringify(m.user_id)} is listed twice (§2b: "each user once")`);
      if (order > 0) throw violation(`snapshot: member ${JSON.stringify(m.user_id)} comes after ${JSON.stringify(prev)} (§2b: "sorted by user_id")`);
    }
  }
  if (snapshot.sessions.length > PRESENCE_MAX_SESSIONS) {
    throw violation(`snapshot: ${snapshot.sessions.length} sessions, over the ${PRESENCE_MAX_SESSIONS} of §2b`);
  }
  if (new Set(snapshot.sessions).size !== snapshot.sessions.length) throw violation('snapshot: a session is listed twice');
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

/**
 * Calls the locator (`body` undefined: a GET without a body) and resolves with the answer's JSON
 * and text when its status is `expectedStatus`; rejects with a PlacementError otherwise.
 */
async function callLocator(method, url, body, expectedStatus) {
  let res;
  try {
    res = await fetch(url, {
      method,
      headers:
        body === undefined
          ? { accept: 'application/json' }
          : { 'content-type': 'application/json', accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    // undici says only "fetch failed"; the reason (ECONNREFUSED, ...) is in its cause.
    throw new Error(`${method} ${url} failed: ${e.cause?.message ?? e.message}`, { cause: e });
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
  return { status: res.status, json, text };
}

async function place(url, body, expectedStatus) {
  const { status, json, text } = await callLocator('POST', url, body ?? {}, expectedStatus);
  // The answer shape of §1 ("Answer 201 Created").
  const ok =
    json &&
    typeof json.session_id === 'string' &&
    Number.isInteger(json.participant_id) &&
    (json.role === 'host' || json.role === 'guest') &&
    typeof json.edge?.url === 'string' &&
    /^wss?:\/\//.test(json.edge.url) &&
    typeof json.token === 'string';
  if (!ok) throw new PlacementError(status, 'bad_answer', `answer lacks fields of §1: ${text.slice(0, 300)}`);
  return json;
}

const base = (locatorUrl) => String(locatorUrl).replace(/\/+$/, '');

/**
 * `POST /api/v1/sessions`: starts a session as its host. `body` is optional
 * (`{ team, user: { id, name }, region, options: { require_approval, max_participants } }`).
 * Resolves with the `201` answer
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

/** An RFC 3339 date-time (§1: `expires_at` is "RFC 3339, UTC"). */
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * `GET /api/v1/teams/{team}/presence` (§1): where `team`'s presence is served. `user` (the user's
 * stable id) and `name` (display name) are the optional query parameters; left out, the locator
 * makes them up. Resolves with the `200` answer `{ team, edge: { id, region, url }, token,
 * expires_at }`; connect to `edge.url` as is with connectPresence(). Rejects with a
 * PlacementError (`400 bad_request`, `503 no_edge_available`, ...).
 *
 * `team` is percent-encoded in the path ("percent-encoded in the path"); the query values are
 * percent-encoded too (encodeURIComponent: a space is `%20`, never `+`).
 *
 * The teams `.` and `..` are refused with a TypeError: §1 allows them, but a WHATWG URL (fetch,
 * browsers, the `ws` package) takes such a path segment, even percent-encoded as `%2E%2E`, for a
 * dot segment and removes it, so neither this request nor a presence URL can name them.
 */
export async function getPresence(locatorUrl, team, { user, name } = {}) {
  if (typeof team !== 'string') throw new TypeError('team: expected a string');
  if (team === '.' || team === '..') {
    throw new TypeError(`team ${JSON.stringify(team)} cannot be a URL path segment: URLs resolve it as a dot segment`);
  }
  const query = [];
  for (const [key, value] of [['user', user], ['name', name]]) {
    if (value === undefined) continue;
    if (typeof value !== 'string') throw new TypeError(`${key}: expected a string`);
    query.push(`${key}=${encodeURIComponent(value)}`);
  }
  const url = `${base(locatorUrl)}/api/v1/teams/${encodeURIComponent(team)}/presence${query.length > 0 ? `?${query.join('&')}` : ''}`;
  const { status, json, text } = await callLocator('GET', url, undefined, 200);
  // The answer shape of §1 ("Answer `200 OK`": team, edge { id, region, url }, token, expires_at).
  const problems = [];
  if (json?.team !== team) problems.push(`team ${JSON.stringify(json?.team)} is not the team asked for, ${JSON.stringify(team)}`);
  if (typeof json?.edge?.id !== 'string') problems.push('no edge.id');
  if (typeof json?.edge?.region !== 'string') problems.push('no edge.region');
  if (typeof json?.edge?.url !== 'string' || !/^wss?:\/\//.test(json.edge.url)) problems.push('no ws:// or wss:// edge.url');
  if (typeof json?.token !== 'string' || json.token === '') problems.push('no token');
  if (typeof json?.expires_at !== 'string' || !RFC3339.test(json.expires_at) || Number.isNaN(Date.parse(json.expires_at))) {
    problems.push('no RFC 3339 expires_at');
  }
  if (problems.length > 0) {
    throw new PlacementError(status, 'bad_answer', `presence answer does not have the shape of §1 (${problems.join('; ')}): ${text.slice(0, 300)}`);
  }
  return json;
}

// ---------------------------------------------------------------------------------------------
// Session connection (§2)
// ---------------------------------------------------------------------------------------------

/** A u64 given as a BigInt or a safe non-negative integer, as a BigInt (RangeError otherwise). */
function toU64(v, name) {
  let big;
  if (typeof v === 'bigint') big = v;
  else if (Number.isSafeInteger(v)) big = BigInt(v);
  else throw new RangeError(`${name}: ${v} is not a u64`);
  if (big < 0n || big > U64_MAX) throw new RangeError(`${name}: ${v} is not a u64`);
  return big;
}

/** Refuses a version the edge would close with 4003 (§2: "A `join` or `resume` with another version is closed with 4003"). */
function checkVersion(version) {
  if (!PROTOCOL_VERSIONS.includes(version)) {
    throw new RangeError(`protocol version ${version} is not one of ${PROTOCOL_VERSIONS.join(', ')}`);
  }
}

/** A close reason from a message: at most the 123 bytes of UTF-8 a close frame holds (RFC 6455). */
function closeReason(message) {
  let s = String(message);
  while (Buffer.byteLength(s) > 123) s = s.slice(0, -1);
  return s.isWellFormed() ? s : s.slice(0, -1);
}

/** A frame from the edge that breaks a rule of §2 beyond its encoding (order, state). */
const violation = (message) => new DecodeError('bad_value', message);

/**
 * A session connection, once joined (`welcome`) or resumed (`resumed`). Incoming frames are
 * queued in arrival order; read them with `await conn.next()` (null once the connection is closed
 * and the queue is drained) or `for await (const frame of conn)`. `conn.closed` resolves with
 * `{ code, reason }` when the socket closes, whoever closed it.
 *
 * It keeps what a later `resume` needs (§2 "Resume"): `participantId`, `resumeSecret`, and
 * `lastSeq`, "the highest `seq` it has received, from events and from `ack`s", counting the frames
 * next() has handed out (drain the queue of a dropped connection before resuming with it). Before
 * any event or ack, `lastSeq` is `welcome.seq` (see connect()), or on a resumed connection the
 * `last_seq` it resumed from. It also keeps the sends not acknowledged yet (`unacked`), to re-send
 * after a resume, and the highest message id used (`highestMessageId`), since "Message ids must
 * increase over a participant's life in the session (across its connections)".
 *
 * Frames that break §2's ordering rules are treated like broken frames (§2: "a version-2 client
 * may treat anything else from the edge as a broken frame and close with 4000"): the connection
 * is closed with 4000 and `protocolError` says why. Those rules: a session event's `seq` is above
 * every `seq` received before (events are seen "in sequence order", "never ... a number twice or
 * out of order", and "An `ack` for `seq` N arrives after every event numbered below N"); a
 * replayed event is not above `resumed.seq`; `welcome`, `waiting` and `resumed` only answer the
 * connection's first frame.
 */
/**
 * Frames received and not yet read, and readers waiting for a frame: what both connection kinds
 * share. `apply` runs on a frame as it is handed to a reader (a session connection tracks its
 * state there).
 */
class FrameQueue {
  #frames = [];
  #waiters = [];
  #closed = false;

  push(frame, apply = (f) => f) {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(apply(frame));
    else this.#frames.push(frame);
  }

  /** No more frames: pending readers get null, and so do later ones once the queue is empty. */
  close() {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w(null);
  }

  next(timeoutMs, apply = (f) => f) {
    if (this.#frames.length > 0) return Promise.resolve(apply(this.#frames.shift()));
    if (this.#closed) return Promise.resolve(null);
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
}

export class Connection {
  #ws;
  #frames = new FrameQueue();
  /** Sends with a non-zero message id that got no `ack` yet: message_id (BigInt) -> entry. */
  #unacked = new Map();
  /** False once a send without a message id was made: errors can then not be attributed. */
  #everySendHasId = true;
  /** The highest seq received (events and acks), handed out or still queued. */
  #seenSeq;
  /** Replayed events announced by `resumed` and not received yet. */
  #replayLeft;

  /** @internal use connect() or resume() */
  constructor(ws, { participantId, resumeSecret, lastSeq, welcome = null, resumed = null, highestMessageId = 0n, version = PROTOCOL_VERSION }) {
    this.#ws = ws;
    /** The protocol version agreed at `join` or `resume` (2, or 3 for media). */
    this.version = version;
    /** The `welcome` this connection was joined with, or null for a resumed connection. */
    this.welcome = welcome;
    /** The `resumed` this connection was resumed with, or null for a joined connection. */
    this.resumed = resumed;
    /** Our own participant id. */
    this.participantId = participantId;
    /** The resume secret (from `welcome`; a resumed connection keeps the one it resumed with). */
    this.resumeSecret = Buffer.from(resumeSecret);
    /** The highest `seq` received from events and `ack`s (a BigInt): `last_seq` for `resume`. */
    this.lastSeq = lastSeq;
    /** Replayed events announced by `resumed` not handed out yet (§2 "Resume", step 3). */
    this.replayPending = resumed ? resumed.replayed : 0;
    this.#replayLeft = this.replayPending;
    this.#seenSeq = lastSeq;
    /** The highest non-zero `message_id` sent by this participant (a BigInt). */
    this.highestMessageId = toU64(highestMessageId, 'highestMessageId');
    /** Set when the socket closes: `{ code, reason }`. */
    this.closeInfo = null;
    /** The first local protocol error (an undecodable or out-of-order frame from the edge), if any. */
    this.protocolError = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        this.#frames.close();
        resolve(this.closeInfo);
      });
    });
    ws.on('message', (data, isBinary) => this.#onMessage(data, isBinary));
  }

  #onMessage(data, isBinary) {
    if (this.protocolError) return; // closing: nothing more is taken
    // §2: every message is one binary websocket message; the edge closes on a text message with
    // 4006, so we treat a text message from the edge the same way.
    if (!isBinary) return this.#fail(CLOSE.text_frame, new DecodeError('bad_value', 'text message from the edge'));
    let frame;
    try {
      frame = decodeEdgeFrame(data);
      this.#check(frame);
    } catch (e) {
      return this.#fail(e.closeCode ?? CLOSE.malformed, e);
    }
    this.#frames.push(frame, (f) => this.#apply(f));
  }

  /** Checks a frame's place in the stream when it arrives; throws on a violation of §2. */
  #check(frame) {
    const { type } = frame;
    // §2 "Versions and enums": "An edge only ever sends a participant the kinds ... of the version
    // it joined with"; for a version-2 client a media kind is an unknown kind (4001).
    if (this.version < MEDIA_PROTOCOL_VERSION && MEDIA_KINDS.has(EDGE_KIND[type])) {
      throw new DecodeError('unknown_kind', `${type} (a version-3 kind) on a version-${this.version} connection`);
    }
    if (type === 'welcome' || type === 'waiting') throw violation(`${type} after the connection was set up: it only answers join`);
    if (type === 'resumed') throw violation('resumed after the connection was set up: it only answers resume');
    if (SEQUENCED_EVENTS.has(type)) {
      if (frame.seq <= this.#seenSeq) {
        throw violation(`${type} with seq ${frame.seq}, not above ${this.#seenSeq}, the highest seq received before (§2: events come in sequence order, never a number twice)`);
      }
      if (this.#replayLeft > 0) {
        if (frame.seq > this.resumed.seq) {
          throw violation(`replayed ${type} with seq ${frame.seq}, above resumed.seq ${this.resumed.seq} (the session's latest)`);
        }
        this.#replayLeft -= 1;
      }
      this.#seenSeq = frame.seq;
    } else if (type === 'ack' && frame.seq > this.#seenSeq) {
      this.#seenSeq = frame.seq;
    }
  }

  /**
   * Applies a frame to lastSeq, replayPending and unacked as it is handed out by next(), so that
   * they describe what the application has been given (a frame still queued when the socket
   * drops is handed out later, but counts only then).
   */
  #apply(frame) {
    const { type } = frame;
    if (SEQUENCED_EVENTS.has(type)) {
      if (this.replayPending > 0) this.replayPending -= 1;
      this.lastSeq = frame.seq;
    } else if (type === 'ack') {
      // A re-send's ack carries its original seq, or 0 outside the replay window (§2): the highest
      // one counts.
      if (frame.seq > this.lastSeq) this.lastSeq = frame.seq;
      this.#unacked.delete(frame.message_id);
    } else if (type === 'error' && SEND_ERROR_CODES.has(frame.code) && this.#everySendHasId) {
      // §2 "Answers come in order": a send error answers the oldest send not answered yet; with
      // only non-zero ids every send gets an answer, so that is the oldest unacknowledged one.
      const oldest = this.#unacked.keys().next();
      if (!oldest.done) this.#unacked.delete(oldest.value);
    }
    return frame;
  }

  #fail(code, error) {
    this.protocolError ??= error;
    this.#ws.close(code, closeReason(error.message));
  }

  /**
   * The next incoming frame, or null once the connection is closed and nothing is left. With
   * `timeoutMs`, rejects if nothing arrives in time.
   */
  next(timeoutMs) {
    return this.#frames.next(timeoutMs, (f) => this.#apply(f));
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
    this.#ws.send(encode(frame, 'client'), { binary: true });
  }

  /** Writes a media frame, refused locally on a version-2 connection (the edge would close it with 4001, §2). */
  #writeMedia(frame) {
    if (this.version < MEDIA_PROTOCOL_VERSION) {
      throw new Error(`cannot send ${frame.type}: media needs protocol version ${MEDIA_PROTOCOL_VERSION}, this connection joined with ${this.version}`);
    }
    this.#write(frame);
  }

  /**
   * `send`: `to` 0 (default) is everyone else, otherwise one participant's id; `messageId` 0
   * (default) is none, a non-zero id is echoed in an `ack` (§2). `payload`: bytes or a string
   * (sent as UTF-8). A non-zero `messageId` must be above every id this participant used before
   * (§2: "Message ids must increase"; the edge would take it for a re-send and not relay it), so
   * a lower one throws a RangeError; use `nextMessageId()`, or `resend()` to re-send.
   */
  send(payload, { to = 0, messageId = 0 } = {}) {
    const id = toU64(messageId, 'messageId');
    if (id !== 0n && id <= this.highestMessageId) {
      throw new RangeError(
        `messageId ${id} is not above ${this.highestMessageId}, the highest this participant used: message ids must increase (§2); use resend() to re-send`,
      );
    }
    this.#write({ type: 'send', message_id: id, to, payload });
    if (id === 0n) {
      this.#everySendHasId = false;
    } else {
      this.highestMessageId = id;
      this.#unacked.set(id, { message_id: id, to, payload });
    }
  }

  /** The next free message id: one above the highest used (a BigInt). */
  nextMessageId() {
    return this.highestMessageId + 1n;
  }

  /**
   * The sends with a non-zero message id that got no `ack` (nor, while every send had an id, an
   * `error`) yet, oldest first: `{ message_id, to, payload }`.
   */
  get unacked() {
    return [...this.#unacked.values()];
  }

  /**
   * Re-sends `entries` (default: every unacknowledged send) with their original message ids,
   * as §2 "Resume" step 4 says after a resume: the edge acknowledges the ones it had already
   * sequenced with their original `seq` and sequences the others.
   */
  resend(entries = this.unacked) {
    for (const e of [...entries]) {
      const id = toU64(e.message_id, 'message_id');
      if (id === 0n) throw new RangeError('a send without a message id cannot be re-sent');
      this.#write({ type: 'send', message_id: id, to: e.to ?? 0, payload: e.payload });
      this.#unacked.delete(id); // re-inserted last: the order of the answers
      this.#unacked.set(id, { message_id: id, to: e.to ?? 0, payload: e.payload });
      if (id > this.highestMessageId) this.highestMessageId = id;
    }
  }

  /** What `resume()` needs to take this participant's place again on a new connection. */
  resumeState() {
    return {
      participantId: this.participantId,
      resumeSecret: Buffer.from(this.resumeSecret),
      lastSeq: this.lastSeq,
      highestMessageId: this.highestMessageId,
      unacked: this.unacked,
    };
  }

  /** `ping`: the edge answers with a `pong` carrying the same nonce (a u64). */
  ping(nonce) {
    this.#write({ type: 'ping', nonce });
  }

  /** `leave`: give up our place; the edge then closes the connection with 1000 (§2). */
  leave() {
    this.#write({ type: 'leave' });
  }

  /**
   * `end_session` (host only): the session ends for everyone, who are closed with 4203, the host
   * too; from a guest the edge answers `error` 3 (§2).
   */
  endSession() {
    this.#write({ type: 'end_session' });
  }

  /**
   * `admit` (host only): admits (`admit` true, the default) or refuses (false) a guest waiting
   * for approval (§2 "Host approval"). The edge answers `error` 3 from a guest and `error` 4 when
   * the participant is not waiting.
   */
  admit(participantId, admit = true) {
    this.#write({ type: 'admit', participant_id: participantId, admit: admit ? ADMIT.admit : ADMIT.refuse });
  }

  // Media signalling (§2 "Media (version 3)"); a version-3 connection only. The edge answers with
  // `media_answer`, `media_offer`, `track_*` and `media_closed` frames, or `error` 6, 7 or 8.

  /**
   * `media_offer`: an SDP offer (`RTCPeerConnection.createOffer()`) that opens this participant's
   * media connection, or renegotiates it; answered with an edge `media_answer`.
   */
  mediaOffer(sdp) {
    this.#writeMedia({ type: 'media_offer', sdp });
  }

  /** `media_answer`: the answer to the edge's `media_offer` number `offerId`. */
  mediaAnswer(offerId, sdp) {
    this.#writeMedia({ type: 'media_answer', offer_id: offerId, sdp });
  }

  /** `media_candidate`: one trickled `RTCIceCandidate.candidate` string; '' ends them. */
  mediaCandidate(candidate) {
    this.#writeMedia({ type: 'media_candidate', candidate });
  }

  /** `track_publish`: what the sending transceiver `mid` carries (a TRACK_SOURCE number). */
  trackPublish(mid, source) {
    this.#writeMedia({ type: 'track_publish', mid, source });
  }

  /** `track_mute`: the track on `mid` is muted (true) or not (false); the others are told. */
  trackMute(mid, muted) {
    this.#writeMedia({ type: 'track_mute', mid, muted: muted ? 1 : 0 });
  }

  /** `media_leave`: closes this participant's media connection; the edge answers `media_closed` 0. */
  mediaLeave() {
    this.#writeMedia({ type: 'media_leave' });
  }

  /** Closes the socket from this side (without `leave`: we keep our place and may resume). */
  close(code = 1000, reason = '') {
    this.#ws.close(code, reason);
  }

  /** Drops the socket at once, without a closing handshake (the edge then sees a lost connection). */
  terminate() {
    this.#ws.terminate();
  }
}

/** The edge closed (or the socket failed) before the connection was set up. */
export class ConnectError extends Error {
  constructor(message, closeInfo) {
    super(message);
    this.name = 'ConnectError';
    /** `{ code, reason }` when the edge closed the socket, else null. */
    this.closeInfo = closeInfo;
  }
}

/**
 * Opens a websocket to `edgeUrl`, sends `first` once it is open, and feeds each frame from the
 * edge to `step(frame, ctx)` until it returns a function that builds the Connection (called in the
 * same tick, so the Connection's listeners see every later frame). A frame `step` refuses (it
 * throws) closes the socket with its close code. `encodeFrame` and `decodeFrame` are the
 * protocol's (default: the session protocol's, §2; the presence protocol's for §2b).
 */
function handshake(edgeUrl, first, answer, timeoutMs, step, { encodeFrame = encode, decodeFrame = decodeEdgeFrame } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(edgeUrl);
    ws.binaryType = 'nodebuffer';
    let settled = false;
    let timer = null;
    let pinger = null;
    const finish = (err, conn) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(pinger);
      ws.off('message', onMessage);
      if (err) {
        if (ws.readyState === WebSocket.OPEN) ws.close(err.closeCode ?? 1000, closeReason(err.message));
        else if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
        reject(err);
      } else {
        resolve(conn);
      }
    };
    const ctx = {
      /** Replaces the deadline: `ms` undefined or Infinity for none. */
      deadline(ms, what) {
        clearTimeout(timer);
        timer = ms === undefined || ms === Infinity ? null : setTimeout(() => finish(new ConnectError(`no ${what} from ${edgeUrl} within ${ms} ms`, null)), ms);
      },
      /** Sends a `ping` every `ms` until the handshake ends; returns the nonces sent. */
      startPinging(ms) {
        const sent = new Set();
        let nonce = 0n;
        pinger = setInterval(() => {
          nonce += 1n;
          sent.add(nonce);
          if (ws.readyState === WebSocket.OPEN) ws.send(encode({ type: 'ping', nonce }), { binary: true });
        }, ms);
        return sent;
      },
    };
    ctx.deadline(timeoutMs, answer);

    ws.on('open', () => ws.send(encodeFrame(first), { binary: true }));
    // Stays attached after the handshake too, so a later socket error is never an unhandled
    // 'error' event; 'close' always follows it and the Connection reports that.
    ws.on('error', (e) => finish(new ConnectError(`websocket to ${edgeUrl} failed: ${e.message}`, null)));
    ws.on('close', (code, reason) => {
      const info = { code, reason: reason.toString('utf8') };
      finish(new ConnectError(`edge closed the connection before ${answer}: ${describeClose(code)} ${JSON.stringify(info.reason)}`, info));
    });

    const onMessage = (data, isBinary) => {
      let build;
      try {
        if (!isBinary) throw Object.assign(new DecodeError('bad_value', 'text message from the edge'), { closeCode: CLOSE.text_frame });
        build = step(decodeFrame(data), ctx);
      } catch (e) {
        return finish(Object.assign(new ConnectError(`before ${answer}: ${e.message}`, null), { closeCode: e.closeCode ?? CLOSE.malformed }));
      }
      if (build) finish(null, build(ws));
    };
    ws.on('message', onMessage);
  });
}

/**
 * Opens a websocket to `edgeUrl` (the placement answer's `edge.url`, used as is, §1), sends
 * `join(version, token)` and resolves with a Connection once `welcome` arrives. `version` is
 * PROTOCOL_VERSION (2) unless given: pass MEDIA_PROTOCOL_VERSION (3) to use media (§2 "Media
 * (version 3)"); the welcome must carry the same version (else closed with 4003). Rejects with a
 * ConnectError if the socket fails or closes first (its `closeInfo.code` then tells why, e.g.
 * 41xx for a token problem, 4206 for a guest the host refused), or after `timeoutMs` without an
 * answer.
 *
 * In a session that requires approval (§2 "Host approval") the edge answers `waiting` first:
 * `onWaiting()` is then called, the connection pings every `pingIntervalMs` (§2: "It waits as
 * long as its connection stays open (it pings like anyone)"), and the `welcome` is awaited for
 * `approvalTimeoutMs` (default: as long as it takes). Until then nothing but `pong` may arrive
 * ("Until admitted, the guest receives no session traffic").
 */
export function connect(edgeUrl, token, { timeoutMs = 10_000, approvalTimeoutMs, pingIntervalMs = 30_000, onWaiting, version = PROTOCOL_VERSION } = {}) {
  checkVersion(version);
  let waitingPings = null;
  return handshake(edgeUrl, { type: 'join', version, token }, 'welcome', timeoutMs, (frame, ctx) => {
    if (frame.type === 'waiting' && waitingPings === null) {
      waitingPings = ctx.startPinging(pingIntervalMs);
      ctx.deadline(approvalTimeoutMs, 'welcome (admission by the host)');
      onWaiting?.();
      return null;
    }
    if (frame.type === 'pong' && waitingPings?.has(frame.nonce)) {
      waitingPings.delete(frame.nonce);
      return null;
    }
    // `welcome` answers `join` (§2); before it only `waiting` (once) and our pongs may come.
    if (frame.type !== 'welcome') {
      throw violation(
        waitingPings === null
          ? `expected welcome or waiting, got ${frame.type}`
          : `a guest waiting for approval receives no session traffic, got ${frame.type}`,
      );
    }
    // §2: "`welcome.version` always equals the version of the `join`".
    if (frame.version !== version) {
      throw Object.assign(violation(`welcome has version ${frame.version}, this client joined with ${version}`), { closeCode: CLOSE.bad_version });
    }
    return (ws) =>
      new Connection(ws, {
        version,
        welcome: frame,
        participantId: frame.participant_id,
        resumeSecret: frame.resume_secret,
        // Nothing received yet: the session's state we got is the welcome's, as of its seq (the
        // next event, our own join, is one we never receive).
        lastSeq: frame.seq,
      });
  });
}

/**
 * Takes a participant's place again on a new websocket to `edgeUrl` (the same `edge.url`) with
 * `resume(version, participantId, resumeSecret, lastSeq)` (§2 "Resume"; `version` as for
 * connect(), pass the old connection's `version` to keep media), and resolves with a Connection
 * once `resumed` arrives; the `resumed.replayed` replayed events follow on it (counted down in
 * `replayPending`), then live traffic. Rejects with a ConnectError when the edge closes first:
 * 4105 (resync needed) and 4106 (resume refused) mean join again with a token, 4200 the session
 * ended.
 *
 * Options: `highestMessageId`, the highest message id this participant used (so that later
 * sends keep increasing); `resend`, sends to re-send right after `resumed` with their original
 * ids (`conn.resumeState().unacked` of the dropped connection; §2 "Resume" step 4).
 * `resumeState()` of the old Connection gives every argument:
 *
 *     const s = old.resumeState();
 *     const conn = await resume(url, s.participantId, s.resumeSecret, s.lastSeq,
 *                               { highestMessageId: s.highestMessageId, resend: s.unacked });
 */
export function resume(edgeUrl, participantId, resumeSecret, lastSeq, { timeoutMs = 10_000, highestMessageId = 0n, resend = [], version = PROTOCOL_VERSION } = {}) {
  checkVersion(version);
  const first = {
    type: 'resume',
    version,
    participant_id: participantId,
    resume_secret: resumeSecret,
    last_seq: toU64(lastSeq, 'lastSeq'),
  };
  // Thrown here, not in the socket's callback, when an argument does not fit.
  encode(first);
  toU64(highestMessageId, 'highestMessageId');
  for (const e of resend) {
    if (toU64(e.message_id, 'message_id') === 0n) throw new RangeError('a send without a message id cannot be re-sent');
    encode({ type: 'send', message_id: e.message_id, to: e.to ?? 0, payload: e.payload });
  }
  return handshake(edgeUrl, first, 'resumed', timeoutMs, (frame) => {
    // §2 "Resume" step 3: "The edge answers `resumed`" (a refused resume is closed "with its code
    // and no frame before it").
    if (frame.type !== 'resumed') throw violation(`expected resumed, got ${frame.type}`);
    // A last_seq above the session's latest is refused (4106), so the answer cannot be below it,
    // and it cannot replay more events than there are numbers above last_seq.
    if (frame.seq < first.last_seq) throw violation(`resumed.seq ${frame.seq} is below our last_seq ${first.last_seq}`);
    if (BigInt(frame.replayed) > frame.seq - first.last_seq) {
      throw violation(`resumed announces ${frame.replayed} replayed events, but only ${frame.seq - first.last_seq} numbers lie above last_seq ${first.last_seq}`);
    }
    return (ws) => {
      const conn = new Connection(ws, {
        version,
        resumed: frame,
        participantId,
        resumeSecret,
        lastSeq: first.last_seq,
        highestMessageId,
      });
      if (resend.length > 0) conn.resend(resend);
      return conn;
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Presence connection (§2b)
// ---------------------------------------------------------------------------------------------

/** Nonces of the automatic keep-alive pings start here, away from small application nonces. */
const KEEPALIVE_NONCE_BASE = 1n << 63n;

/**
 * A presence connection, once its `hello` was answered with a `snapshot`. `first` is that
 * snapshot; `latest` the latest snapshot received (§2b: "Each snapshot is complete ... a client
 * simply shows the latest"). Later frames (`snapshot`, and `pong` for our pings) are queued in
 * arrival order: read them with `await conn.next(timeoutMs)` (null once the connection is closed
 * and the queue is drained) or `for await`. `conn.closed` resolves with `{ code, reason }` when the
 * socket closes; on 4400 (edge shutting down) or a drop, ask the locator again (getPresence()).
 *
 * Frames that break §2b are treated as broken frames, closing the connection with 4000 and
 * setting `protocolError`: a `snapshot` whose `seq` does not rise ("`seq` rises with every
 * snapshot of this team on this edge"), or whose content breaks checkSnapshot().
 *
 * With `keepAliveMs`, it sends a `ping` that often (§2b: "send one every 30 s or so") and keeps
 * the answering pongs to itself (their nonces are 2^63 and up).
 */
export class PresenceConnection {
  #ws;
  #frames = new FrameQueue();
  #keepAlive = null;
  #keepAliveNonces = new Set();

  /** @internal use connectPresence() */
  constructor(ws, first, { keepAliveMs } = {}) {
    this.#ws = ws;
    /** The snapshot that answered `hello`. */
    this.first = first;
    /** The latest snapshot received (handed out by next() or still queued). */
    this.latest = first;
    /** Set when the socket closes: `{ code, reason }`. */
    this.closeInfo = null;
    /** The first local protocol error (an undecodable or out-of-order frame from the edge), if any. */
    this.protocolError = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        clearInterval(this.#keepAlive);
        this.closeInfo = { code, reason: reason.toString('utf8') };
        this.#frames.close();
        resolve(this.closeInfo);
      });
    });
    ws.on('message', (data, isBinary) => this.#onMessage(data, isBinary));
    if (keepAliveMs !== undefined) {
      let nonce = KEEPALIVE_NONCE_BASE;
      this.#keepAlive = setInterval(() => {
        if (ws.readyState !== WebSocket.OPEN) return;
        nonce += 1n;
        this.#keepAliveNonces.add(nonce);
        ws.send(encodePresenceToSend({ type: 'ping', nonce }), { binary: true });
      }, keepAliveMs);
    }
  }

  #onMessage(data, isBinary) {
    if (this.protocolError) return;
    if (!isBinary) return this.#fail(CLOSE.text_frame, new DecodeError('bad_value', 'text message from the edge'));
    let frame;
    try {
      frame = decodePresenceEdgeFrame(data);
      if (frame.type === 'snapshot') {
        if (frame.seq <= this.latest.seq) {
          throw violation(`snapshot with seq ${frame.seq}, not above ${this.latest.seq}, the previous one's (§2b: "seq rises with every snapshot")`);
        }
        checkSnapshot(frame);
        this.latest = frame;
      } else if (frame.type === 'pong' && this.#keepAliveNonces.delete(frame.nonce)) {
        return; // the answer to a keep-alive ping
      }
    } catch (e) {
      return this.#fail(e.closeCode ?? CLOSE.malformed, e);
    }
    this.#frames.push(frame);
  }

  #fail(code, error) {
    this.protocolError ??= error;
    this.#ws.close(code, closeReason(error.message));
  }

  /** The next incoming frame, or null once closed and drained; with `timeoutMs`, rejects if nothing comes in time. */
  next(timeoutMs) {
    return this.#frames.next(timeoutMs);
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      const frame = await this.next();
      if (frame === null) return;
      yield frame;
    }
  }

  /** `ping`: the edge answers with a `pong` carrying the same nonce (a u64). */
  ping(nonce) {
    if (this.#ws.readyState !== WebSocket.OPEN) throw new Error('cannot send ping: the connection is not open');
    this.#ws.send(encodePresenceToSend({ type: 'ping', nonce }), { binary: true });
  }

  /** Closes the socket from this side; the user goes offline once its last connection closes (§2b). */
  close(code = 1000, reason = '') {
    clearInterval(this.#keepAlive);
    this.#ws.close(code, reason);
  }

  /** Drops the socket at once, without a closing handshake. */
  terminate() {
    clearInterval(this.#keepAlive);
    this.#ws.terminate();
  }
}

/**
 * Opens a websocket to `edgeUrl` (getPresence()'s `edge.url`, used as is), sends
 * `hello(1, token)` and resolves with a PresenceConnection once the first `snapshot` arrives
 * (§2b: "After `hello` the edge sends a `snapshot`"). Rejects with a ConnectError when the edge
 * closes first (`closeInfo.code`: 4100-4103 for a token problem, 4102 for a session token or
 * another team's, 4003 for the version, ...), when anything but a snapshot comes first (closed
 * with 4000), or after `timeoutMs`. A token that makes `hello` longer than 16 KiB throws a
 * RangeError. `keepAliveMs`: see PresenceConnection.
 */
export function connectPresence(edgeUrl, token, { timeoutMs = 10_000, keepAliveMs, version = PRESENCE_VERSION } = {}) {
  const first = { type: 'hello', version, token };
  encodePresenceToSend(first); // thrown here, not in the socket's callback
  return handshake(
    edgeUrl,
    first,
    'snapshot',
    timeoutMs,
    (frame) => {
      if (frame.type !== 'snapshot') throw violation(`expected snapshot, got ${frame.type}`);
      checkSnapshot(frame);
      return (ws) => new PresenceConnection(ws, frame, { keepAliveMs });
    },
    { encodeFrame: encodePresenceToSend, decodeFrame: decodePresenceEdgeFrame },
  );
}
