// Checks this client's encoder and decoder against the byte-level examples of docs/protocol.md
// (§2 "Byte-level examples", media ones included, and the presence examples of §2b), its kind and close code tables
// against the document's, that the decoders are strict (§2: "A message must contain exactly its
// fields"), its handshakes and bookkeeping (waiting, resume, last_seq, message ids, presence
// snapshots) against a scripted edge in this process, and the presence placement request against
// a scripted locator.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';
import {
  ADMIT,
  canResume,
  checkSnapshot,
  CLIENT_KIND,
  CLOSE,
  CLOSE_NAME,
  closeCodeAction,
  connect,
  ConnectError,
  connectPresence,
  decode,
  decodeClientFrame,
  decodeEdgeFrame,
  DecodeError,
  EDGE_KIND,
  decodePresence,
  decodePresenceClientFrame,
  decodePresenceEdgeFrame,
  encode,
  encodePresence,
  ERROR_CODE,
  getPresence,
  MAX_TEXT_BYTES,
  MEDIA_CLOSE_REASON,
  MEDIA_KINDS,
  MEDIA_PROTOCOL_VERSION,
  PlacementError,
  PRESENCE_KIND,
  PRESENCE_MAX_CLIENT_MESSAGE_BYTES,
  PRESENCE_VERSION,
  PROTOCOL_VERSION,
  PROTOCOL_VERSIONS,
  resume,
  ROLE,
  TRACK_SOURCE,
} from './duet-client.mjs';

/** Every `<!-- fixture: NAME -->` example of the document: NAME -> bytes. */
function fixturesOfTheDocument() {
  const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
  const found = new Map();
  for (const m of doc.matchAll(/<!-- fixture: ([A-Za-z0-9_-]+) -->\s*```hex\r?\n([\s\S]*?)```/g)) {
    const hex = m[2].replace(/\s+/g, '');
    assert.match(hex, /^([0-9a-fA-F]{2})*$/, `fixture ${m[1]} is not whole hex bytes`);
    assert.ok(!found.has(m[1]), `fixture ${m[1]} appears twice`);
    found.set(m[1], Buffer.from(hex, 'hex'));
  }
  return found;
}

const FIXTURES = fixturesOfTheDocument();
const DOC = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
/** §2 of the document, "Session protocol", up to §2b (presence) or §3. */
const SESSION_SECTION = (() => {
  const start = DOC.indexOf('\n## 2. ');
  const presence = DOC.indexOf('\n## 2b. ');
  const end = presence >= 0 ? presence : DOC.indexOf('\n## 3. ');
  assert.ok(start >= 0 && end > start, 'docs/protocol.md has no section 2');
  return DOC.slice(start, end);
})();
/** §2b of the document, "Presence protocol", up to §3. */
const PRESENCE_SECTION = (() => {
  const start = DOC.indexOf('\n## 2b. ');
  const end = DOC.indexOf('\n## 3. ');
  assert.ok(start >= 0 && end > start, 'docs/protocol.md has no section 2b');
  return DOC.slice(start, end);
})();

// The message each example describes, built from the prose above it.
const ada = { id: 1, role: ROLE.host, user_id: 'ada', display_name: 'Ada' };
const bo = { id: 2, role: ROLE.guest, user_id: 'bo', display_name: 'Bo' };
// The prose does not give cy's role; a participant waiting for approval is a guest (§2 "Host
// approval": "a guest's `join` is answered with `waiting`").
const cy = { id: 3, role: ROLE.guest, user_id: 'cy', display_name: 'Cy' };
const secret = Buffer.from([0xab, 0xab, 0xab, 0xab]);
const SDP = 'v=0\r\n';
const DESCRIBED = {
  // "`join` with version 2 and the token `eyJ0`"
  'session-join': { type: 'join', version: 2, token: 'eyJ0' },
  // "`send` with `message_id` 42 to everyone (`to` 0), payload `hi`"
  'session-send': { type: 'send', message_id: 42n, to: 0, payload: Buffer.from('hi') },
  // "`send` without a message id, to participant 2, payload `k`"
  'session-send-direct': { type: 'send', message_id: 0n, to: 2, payload: Buffer.from('k') },
  // "`ping` with nonce 1, and its `pong`"
  'session-ping': { type: 'ping', nonce: 1n },
  'session-pong': { type: 'pong', nonce: 1n },
  // "`leave`"
  'session-leave': { type: 'leave' },
  // "`welcome` for participant 2 at sequence 5, resume secret `ab ab ab ab`, two participants:
  // the host (1, user `ada`, name `Ada`) and the guest itself (2, `bo`, `Bo`), with the host
  // away". The prose does not state `version`; this page describes version 2.
  'session-welcome': {
    type: 'welcome',
    version: 2,
    participant_id: 2,
    seq: 5n,
    resume_secret: secret,
    participants: [ada, bo],
    away: [1],
  },
  // "`participant_joined` at sequence 6 for the host" (the host of the welcome example: 1, `ada`, `Ada`)
  'session-participant-joined': { type: 'participant_joined', seq: 6n, participant: ada },
  // "`participant_left` at sequence 7, participant 2, reason 1 (disconnected)"
  'session-participant-left': { type: 'participant_left', seq: 7n, participant_id: 2, reason: 1 },
  // "`message` at sequence 8 from participant 1 to everyone, payload `hi`"
  'session-message': { type: 'message', seq: 8n, from: 1, to: 0, payload: Buffer.from('hi') },
  // "`ack` of message id 42, sequenced as 8"
  'session-ack': { type: 'ack', message_id: 42n, seq: 8n },
  // "`error` code 1, message `no 9`"
  'session-error': { type: 'error', code: 1, message: 'no 9' },
  // "`resume` for participant 2 with secret `ab ab ab ab`, having received up to sequence 9"
  // (version: not stated; 2, the only one `resume` exists in)
  'session-resume': { type: 'resume', version: 2, participant_id: 2, resume_secret: secret, last_seq: 9n },
  // "Its answer, `resumed`: the session is at sequence 12 and 3 events are replayed"
  'session-resumed': { type: 'resumed', seq: 12n, replayed: 3 },
  // "`participant_away` at sequence 10 for participant 1, and `participant_back` at 11"
  'session-participant-away': { type: 'participant_away', seq: 10n, participant_id: 1 },
  'session-participant-back': { type: 'participant_back', seq: 11n, participant_id: 1 },
  // "`end_session`, and `admit` of participant 3"
  'session-end-session': { type: 'end_session' },
  'session-admit': { type: 'admit', participant_id: 3, admit: 1 },
  // "`join_request` for participant 3 (user `cy`, name `Cy`), and `waiting`"
  'session-join-request': { type: 'join_request', participant: cy },
  'session-waiting': { type: 'waiting' },
  // "Media (version 3). `media_offer` and `media_answer` from a client, with the 5-byte SDP
  // `v=0\r\n` ..., the answer to the edge's offer 2"
  'session-media-offer': { type: 'media_offer', sdp: SDP },
  'session-media-answer': { type: 'media_answer', offer_id: 2, sdp: SDP },
  // "`media_candidate` with `candidate:1 1 udp 1 127.0.0.1 5000 typ host`"
  'session-media-candidate': { type: 'media_candidate', candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host' },
  // "`track_publish`: mid `1` carries the screen; `track_mute`: mid `0` is muted; `media_leave`"
  'session-track-publish': { type: 'track_publish', mid: '1', source: TRACK_SOURCE.screen },
  'session-track-mute': { type: 'track_mute', mid: '0', muted: 1 },
  'session-media-leave': { type: 'media_leave' },
  // "From the edge: its `media_answer`, and its `media_offer` number 2"
  'session-edge-media-answer': { type: 'media_answer', sdp: SDP },
  'session-edge-media-offer': { type: 'media_offer', offer_id: 2, sdp: SDP },
  // "`track_published`: track 5 of participant 1, its camera, not muted, arriving on your mid `2`;
  // then `track_muted` (track 5 muted), `track_unpublished` (track 5), and `media_closed` (reason
  // 1, disconnected)"
  'session-track-published': { type: 'track_published', track_id: 5, participant_id: 1, source: TRACK_SOURCE.camera, muted: 0, mid: '2' },
  'session-track-muted': { type: 'track_muted', track_id: 5, muted: 1 },
  'session-track-unpublished': { type: 'track_unpublished', track_id: 5 },
  'session-media-closed': { type: 'media_closed', reason: MEDIA_CLOSE_REASON.disconnected },
};
/**
 * Which way each example goes. The kind byte says it (§2: "Kinds `0x01`-`0x7f` go from client to
 * edge, `0x81`-`0xff` from edge to client"); the prose says it too, and `media_offer` and
 * `media_answer` need it because they are names of both directions.
 */
const EDGE_EXAMPLES_OF_CLIENT_NAMES = new Set(['session-edge-media-answer', 'session-edge-media-offer']);
const directionOf = (name) =>
  Object.hasOwn(CLIENT_KIND, DESCRIBED[name].type) && !EDGE_EXAMPLES_OF_CLIENT_NAMES.has(name) ? 'client' : 'edge';

const isDecodeError = (reason) => (e) => {
  assert.ok(e instanceof DecodeError, `expected a DecodeError, got ${e}`);
  assert.equal(e.reason, reason, e.message);
  assert.equal(e.closeCode, reason === 'unknown_kind' ? 4001 : 4000);
  return true;
};

describe('byte-level examples of docs/protocol.md', () => {
  test('the document holds every session example this test knows, and no other', () => {
    const inDoc = [...FIXTURES.keys()].filter((name) => name.startsWith('session-')).sort();
    assert.deepEqual(inDoc, Object.keys(DESCRIBED).sort());
  });

  test('every frame kind of section 2 has an example, in each direction', () => {
    for (const [direction, kinds] of [['client', CLIENT_KIND], ['edge', EDGE_KIND]]) {
      const types = new Set(Object.keys(DESCRIBED).filter((name) => directionOf(name) === direction).map((name) => DESCRIBED[name].type));
      assert.deepEqual([...types].sort(), Object.keys(kinds).sort(), direction);
    }
  });

  test('the kind tables of section 2 are exactly the kinds this client knows', () => {
    const table = (heading) => {
      const start = SESSION_SECTION.indexOf(`\n### ${heading}\n`);
      assert.ok(start >= 0, `no "${heading}" in section 2`);
      const end = SESSION_SECTION.indexOf('\n### ', start + 1);
      const rows = [...SESSION_SECTION.slice(start, end).matchAll(/^\| `0x([0-9a-f]{2})` +\| `([a-z_]+)` +\|/gm)];
      return Object.fromEntries(rows.map((m) => [m[2], parseInt(m[1], 16)]));
    };
    assert.deepEqual(table('Client to edge'), { ...CLIENT_KIND });
    assert.deepEqual(table('Edge to client'), { ...EDGE_KIND });
  });

  test('the client kinds are 0x01-0x7f and the edge kinds 0x81-0xff', () => {
    for (const kind of Object.values(CLIENT_KIND)) assert.ok(kind > 0x00 && kind < 0x80, kind);
    for (const kind of Object.values(EDGE_KIND)) assert.ok(kind > 0x80 && kind <= 0xff, kind);
  });

  test('the media kinds are the ones version 3 added, and the versions are 2 and 3', () => {
    // §2 "Versions and enums": "version 3, which added media signalling (kinds `0x08`-`0x0d` and `0x8d`-`0x92`".
    const m = SESSION_SECTION.match(/added media signalling \(kinds `0x([0-9a-f]{2})`-`0x([0-9a-f]{2})` and `0x([0-9a-f]{2})`-`0x([0-9a-f]{2})`/);
    assert.ok(m, 'the version-3 kind ranges are stated');
    const [a, b, c, d] = m.slice(1).map((h) => parseInt(h, 16));
    const expected = [];
    for (let k = a; k <= b; k++) expected.push(k);
    for (let k = c; k <= d; k++) expected.push(k);
    assert.deepEqual([...MEDIA_KINDS].sort((x, y) => x - y), expected);
    for (const kind of MEDIA_KINDS) assert.ok(Object.values(CLIENT_KIND).includes(kind) || Object.values(EDGE_KIND).includes(kind), kind);
    // Close code 4003: "the `version` of `join` or `resume` is not 2 or 3".
    assert.match(SESSION_SECTION, /\| 4003 \|.*is not 2 or 3/);
    assert.deepEqual(PROTOCOL_VERSIONS, [2, 3]);
    assert.equal(MEDIA_PROTOCOL_VERSION, 3);
    // The notation table: "`text` | `u32` byte length, then that many bytes of UTF-8 (SDP; at most 524,288 bytes)".
    assert.match(SESSION_SECTION, /\| `text` +\| `u32` byte length, then that many bytes of UTF-8 \(SDP; at most 524,288 bytes\)/);
    assert.equal(MAX_TEXT_BYTES, 524_288);
  });

  for (const [name, frame] of Object.entries(DESCRIBED)) {
    describe(name, () => {
      const bytes = FIXTURES.get(name);

      test('encodes to exactly the example bytes', () => {
        assert.ok(bytes, `no fixture ${name} in the document`);
        assert.equal(encode(frame, directionOf(name)).toString('hex'), bytes.toString('hex'));
        // Without a direction, only the names of both directions need one.
        if (frame.type === 'media_offer' || frame.type === 'media_answer') assert.throws(() => encode(frame), TypeError);
        else assert.equal(encode(frame).toString('hex'), bytes.toString('hex'));
      });

      test('decodes to the described values', () => {
        assert.deepStrictEqual(decode(bytes), frame);
        // The kind byte tells the direction (§2: 0x01-0x7f client to edge, 0x81-0xff edge to client).
        if (directionOf(name) === 'client') {
          assert.deepStrictEqual(decodeClientFrame(bytes), frame);
          assert.throws(() => decodeEdgeFrame(bytes), isDecodeError('unknown_kind'));
        } else {
          assert.deepStrictEqual(decodeEdgeFrame(bytes), frame);
          assert.throws(() => decodeClientFrame(bytes), isDecodeError('unknown_kind'));
        }
      });

      test('every truncation is rejected', () => {
        for (let len = 0; len < bytes.length; len++) {
          assert.throws(() => decode(bytes.subarray(0, len)), isDecodeError('truncated'), `${len} of ${bytes.length} bytes`);
        }
      });

      test('trailing bytes are rejected', () => {
        for (const extra of [[0x00], [0xff], [0x01, 0x02, 0x03]]) {
          const longer = Buffer.concat([bytes, Buffer.from(extra)]);
          assert.throws(() => decode(longer), isDecodeError('trailing'));
        }
      });
    });
  }
});

// The presence examples of §2b, built from the prose above them.
const PRESENCE_DESCRIBED = {
  // "`hello` with version 1 and the token `eyJ0`, and `ping` with nonce 1"
  'presence-hello': { type: 'hello', version: 1, token: 'eyJ0' },
  'presence-ping': { type: 'ping', nonce: 1n },
  // "A `snapshot` at `seq` 4: `ada` (`Ada`, two connections) and `bo` (`Bo`, one), one live
  // session `s_1`; and a `pong`" (the pong's nonce is not stated; 1 answers the ping above).
  'presence-snapshot': {
    type: 'snapshot',
    seq: 4n,
    members: [
      { user_id: 'ada', display_name: 'Ada', connections: 2 },
      { user_id: 'bo', display_name: 'Bo', connections: 1 },
    ],
    sessions: ['s_1'],
  },
  'presence-pong': { type: 'pong', nonce: 1n },
};
const PRESENCE_CLIENT_SIDE = new Set(['hello', 'ping']);

describe('presence examples of docs/protocol.md (§2b)', () => {
  test('the document holds every presence example this test knows, and no other', () => {
    const inDoc = [...FIXTURES.keys()].filter((name) => name.startsWith('presence-')).sort();
    assert.deepEqual(inDoc, Object.keys(PRESENCE_DESCRIBED).sort());
  });

  test('every example of the document is a session, presence or link example', () => {
    // session-* and presence-* are checked here; link-* are §3's, postcard between edge and
    // locator, which is not a client's business. A new prefix would go unchecked: fail instead.
    for (const name of FIXTURES.keys()) assert.match(name, /^(session|presence|link)-/, `fixture ${name}`);
  });

  test('every presence frame kind has an example', () => {
    const kinds = new Set(Object.values(PRESENCE_DESCRIBED).map((f) => f.type));
    assert.deepEqual([...kinds].sort(), Object.keys(PRESENCE_KIND).sort());
  });

  test('the kind table of section 2b is exactly the presence kinds this client knows, directions included', () => {
    const rows = [...PRESENCE_SECTION.matchAll(/^\| `0x([0-9a-f]{2})` +\| ([a-z ]+?) +\| `([a-z_]+)` +\|/gm)];
    assert.deepEqual(Object.fromEntries(rows.map((m) => [m[3], parseInt(m[1], 16)])), { ...PRESENCE_KIND });
    for (const m of rows) {
      const kind = parseInt(m[1], 16);
      assert.equal(m[2], kind < 0x80 ? 'client to edge' : 'edge to client', m[3]);
      assert.equal(kind < 0x80, PRESENCE_CLIENT_SIDE.has(m[3]), m[3]);
    }
    // `hello`: "`version: u8` (1)".
    assert.match(PRESENCE_SECTION, /\| `hello` +\| `version: u8` \(1\)/);
    assert.equal(PRESENCE_VERSION, 1);
  });

  test('presence kinds that are session kinds too are version-3 edge kinds, of another websocket', () => {
    // The presence protocol has "the kinds of its own table" (§2b) on its own websocket; version 3
    // of the session protocol took 0x91 and 0x92 (track_muted, media_closed), the presence
    // snapshot's and pong's kinds. Nothing else overlaps.
    const session = new Set([...Object.values(CLIENT_KIND), ...Object.values(EDGE_KIND)]);
    const shared = Object.values(PRESENCE_KIND).filter((kind) => session.has(kind));
    assert.deepEqual(shared, [EDGE_KIND.track_muted, EDGE_KIND.media_closed]);
    for (const kind of shared) assert.ok(MEDIA_KINDS.has(kind));
  });

  for (const [name, frame] of Object.entries(PRESENCE_DESCRIBED)) {
    describe(name, () => {
      const bytes = FIXTURES.get(name);

      test('encodes to exactly the example bytes', () => {
        assert.ok(bytes, `no fixture ${name} in the document`);
        assert.equal(encodePresence(frame).toString('hex'), bytes.toString('hex'));
      });

      test('decodes with the presence decoders to the described values', () => {
        assert.deepStrictEqual(decodePresence(bytes), frame);
        if (PRESENCE_CLIENT_SIDE.has(frame.type)) {
          assert.deepStrictEqual(decodePresenceClientFrame(bytes), frame);
          assert.throws(() => decodePresenceEdgeFrame(bytes), isDecodeError('unknown_kind'));
        } else {
          assert.deepStrictEqual(decodePresenceEdgeFrame(bytes), frame);
          assert.throws(() => decodePresenceClientFrame(bytes), isDecodeError('unknown_kind'));
        }
      });

      test('is not a session frame', () => {
        const sessionKind = Object.values(EDGE_KIND).includes(bytes[0]);
        // A kind the session shares (0x91, 0x92) does not decode as one of its frames either.
        assert.throws(() => decode(bytes), sessionKind ? DecodeError : isDecodeError('unknown_kind'));
        assert.throws(() => decodeEdgeFrame(bytes), sessionKind ? DecodeError : isDecodeError('unknown_kind'));
        assert.throws(() => decodeClientFrame(bytes), isDecodeError('unknown_kind'));
      });

      test('every truncation is rejected', () => {
        for (let len = 0; len < bytes.length; len++) {
          assert.throws(() => decodePresence(bytes.subarray(0, len)), isDecodeError('truncated'), `${len} of ${bytes.length} bytes`);
        }
      });

      test('trailing bytes are rejected', () => {
        for (const extra of [[0x00], [0xff], [0x01, 0x02, 0x03]]) {
          assert.throws(() => decodePresence(Buffer.concat([bytes, Buffer.from(extra)])), isDecodeError('trailing'));
        }
      });
    });
  }

  test('session examples are not presence frames', () => {
    for (const [name, bytes] of FIXTURES) {
      if (!name.startsWith('session-')) continue;
      // track_muted and media_closed share their kinds with snapshot and pong (see above).
      const presenceKind = Object.values(PRESENCE_KIND).includes(bytes[0]);
      assert.throws(() => decodePresence(bytes), presenceKind ? DecodeError : isDecodeError('unknown_kind'), name);
    }
  });
});

describe('strict presence decoding', () => {
  const snapshotBytes = () => Buffer.from(FIXTURES.get('presence-snapshot'));
  // Offsets in the snapshot example: kind(1) seq(8) member_count(2) at 9, first user_id at 11.
  const MEMBER_COUNT_LOW = 10;
  const SESSION_COUNT_LOW = 34; // 11 + (2+3 + 2+3 + 2) + (2+2 + 2+2 + 2) = 33: the u16 at 33-34

  test('unknown kinds, session kinds included, are rejected with 4001', () => {
    for (const kind of [0x00, 0x01, 0x03, 0x10, 0x13, 0x7f, 0x80, 0x81, 0x87, 0x90, 0x93, 0xff]) {
      assert.throws(() => decodePresence(Buffer.from([kind, 0, 0, 0, 0, 0, 0, 0, 1])), isDecodeError('unknown_kind'), `0x${kind.toString(16)}`);
    }
  });

  test('the offsets used below are the example\'s', () => {
    const b = snapshotBytes();
    assert.equal(b.readUInt16BE(MEMBER_COUNT_LOW - 1), 2);
    assert.equal(b.readUInt16BE(SESSION_COUNT_LOW - 1), 1);
    assert.equal(b.length, SESSION_COUNT_LOW + 1 + 2 + 3);
  });

  test('invalid UTF-8 in a str is rejected', () => {
    // hello(1, token = ff fe)
    assert.throws(() => decodePresence(Buffer.from('11010002fffe', 'hex')), isDecodeError('bad_utf8'));
    // user_id, display_name and session_id of the snapshot example, each spoilt in turn.
    for (const offset of [13, 18, 39]) {
      const b = snapshotBytes();
      b[offset] = 0xc3; // a lead byte followed by an ASCII byte (or nothing): not UTF-8
      assert.throws(() => decodePresence(b), isDecodeError('bad_utf8'), `offset ${offset}`);
    }
  });

  test('counts that do not match the members and sessions held are rejected', () => {
    const more = snapshotBytes();
    more[MEMBER_COUNT_LOW] = 3; // the session count and id are read as a third member, then nothing
    assert.throws(() => decodePresence(more), isDecodeError('truncated'));
    const fewer = snapshotBytes();
    fewer[MEMBER_COUNT_LOW] = 1; // bo's record is read as the session list: 2 ids "Bo"... then trails
    assert.throws(() => decodePresence(fewer), DecodeError);
    const moreSessions = snapshotBytes();
    moreSessions[SESSION_COUNT_LOW] = 2;
    assert.throws(() => decodePresence(moreSessions), isDecodeError('truncated'));
    const noSessions = snapshotBytes();
    noSessions[SESSION_COUNT_LOW] = 0;
    assert.throws(() => decodePresence(noSessions), isDecodeError('trailing'));
    // Without the session list at all: truncated.
    assert.throws(() => decodePresence(snapshotBytes().subarray(0, SESSION_COUNT_LOW - 1)), isDecodeError('truncated'));
  });

  test('an empty snapshot decodes', () => {
    const empty = { type: 'snapshot', seq: 1n, members: [], sessions: [] };
    assert.equal(encodePresence(empty).toString('hex'), '91000000000000000100000000');
    assert.deepStrictEqual(decodePresenceEdgeFrame(encodePresence(empty)), empty);
  });

  test('values that do not fit their field are refused by the encoder', () => {
    const member = { user_id: 'a', display_name: 'A', connections: 1 };
    assert.throws(() => encodePresence({ type: 'snapshot', seq: 1n, members: [{ ...member, connections: 65536 }], sessions: [] }), RangeError);
    assert.throws(() => encodePresence({ type: 'snapshot', seq: -1, members: [], sessions: [] }), RangeError);
    assert.throws(() => encodePresence({ type: 'snapshot', seq: 1n, members: new Array(65536).fill(member), sessions: [] }), RangeError);
    assert.throws(() => encodePresence({ type: 'hello', version: 256, token: 'x' }), RangeError);
    assert.throws(() => encodePresence({ type: 'ping', nonce: 1n << 64n }), RangeError);
    assert.throws(() => encodePresence({ type: 'join', token: 'x' }), TypeError);
    assert.equal(encodePresence({ type: 'hello', token: 'eyJ0' }).toString('hex'), FIXTURES.get('presence-hello').toString('hex'));
  });

  test('snapshot content: sorted by user_id, each user once, online with a connection, at most 500 sessions', () => {
    const ok = PRESENCE_DESCRIBED['presence-snapshot'];
    checkSnapshot(ok);
    const [ada, bo] = ok.members;
    const bad = (snapshot) => assert.throws(() => checkSnapshot(snapshot), isDecodeError('bad_value'));
    bad({ ...ok, members: [bo, ada] });
    bad({ ...ok, members: [ada, ada] });
    bad({ ...ok, members: [ada, { ...bo, connections: 0 }] });
    bad({ ...ok, sessions: ['s_1', 's_1'] });
    bad({ ...ok, sessions: Array.from({ length: 501 }, (_, i) => `s_${i}`) });
    checkSnapshot({ ...ok, sessions: Array.from({ length: 500 }, (_, i) => `s_${i}`) });
    // Byte order: upper case before lower case, and U+FF61 before U+1F600 (UTF-16 would have
    // the emoji's surrogate 0xD83D first).
    const m = (user_id) => ({ user_id, display_name: user_id, connections: 1 });
    checkSnapshot({ ...ok, members: [m('Bo'), m('ada')] });
    checkSnapshot({ ...ok, members: [m('\uff61'), m('\u{1f600}')] });
    bad({ ...ok, members: [m('\u{1f600}'), m('\uff61')] });
  });
});

describe('strict decoding', () => {
  test('unknown kinds are rejected with 4001', () => {
    for (const kind of [0x00, 0x0e, 0x7f, 0x80, 0x93, 0xff]) {
      assert.throws(() => decode(Buffer.from([kind, 0, 0, 0, 0, 0, 0, 0, 0])), isDecodeError('unknown_kind'));
    }
  });

  test('invalid UTF-8 in a str is rejected', () => {
    // join(2, token = ff fe): not UTF-8.
    assert.throws(() => decode(Buffer.from('01020002fffe', 'hex')), isDecodeError('bad_utf8'));
    // join_request for 3 (guest) with user_id ed a0 80: an encoded surrogate, not UTF-8.
    assert.throws(() => decode(Buffer.from('8b0000000302' + '0003eda080' + '00024379', 'hex')), isDecodeError('bad_utf8'));
    // error(1, message = c3): a truncated two-byte sequence.
    assert.throws(() => decode(Buffer.from('8600010001c3', 'hex')), isDecodeError('bad_utf8'));
  });

  test('unknown enum values are rejected', () => {
    const joined = Buffer.from(FIXTURES.get('session-participant-joined'));
    for (const role of [0, 3, 0xff]) {
      joined[13] = role; // kind(1) + seq(8) + id(4): the role byte
      assert.throws(() => decode(joined), isDecodeError('bad_value'));
    }
    const welcome = Buffer.from(FIXTURES.get('session-welcome'));
    welcome[25] = 9; // the first participant's role
    assert.throws(() => decode(welcome), isDecodeError('bad_value'));
    const left = Buffer.from(FIXTURES.get('session-participant-left'));
    left[13] = 3; // reason
    assert.throws(() => decode(left), isDecodeError('bad_value'));
    // §2: "any `admit` byte other than 0 or 1 closes with 4000".
    const admit = Buffer.from(FIXTURES.get('session-admit'));
    for (const value of [2, 0x80, 0xff]) {
      admit[5] = value;
      assert.throws(() => decode(admit), isDecodeError('bad_value'));
    }
    admit[5] = 0;
    assert.deepStrictEqual(decode(admit), { type: 'admit', participant_id: 3, admit: ADMIT.refuse });
    const request = Buffer.from(FIXTURES.get('session-join-request'));
    request[5] = 0; // kind(1) + id(4): the role byte
    assert.throws(() => decode(request), isDecodeError('bad_value'));
  });

  test('a declared length beyond the message is a truncation', () => {
    // send with a payload length of 2^32-1 and no payload.
    const send = Buffer.from('02' + '00'.repeat(8) + '00000000' + 'ffffffff', 'hex');
    assert.throws(() => decode(send), isDecodeError('truncated'));
    // welcome announcing 1 participant but holding 2: the second one's first bytes are read as
    // away_count 0, and the rest trails.
    const welcome = Buffer.from(FIXTURES.get('session-welcome'));
    welcome[20] = 1; // low byte of count
    assert.throws(() => decode(welcome), isDecodeError('trailing'));
    // welcome announcing 3 participants but holding 2: the away list is read as a participant
    // (whose role byte, 0, is no role) and then runs out.
    welcome[20] = 3;
    assert.throws(() => decode(welcome), DecodeError);
    // The away list: away_count is the u16 before the last 4 bytes.
    const away = Buffer.from(FIXTURES.get('session-welcome'));
    const awayCount = away.length - 4 - 1; // low byte
    assert.deepStrictEqual(decode(away).away, [1]);
    away[awayCount] = 2;
    assert.throws(() => decode(away), isDecodeError('truncated'));
    away[awayCount] = 0;
    assert.throws(() => decode(away), isDecodeError('trailing'));
    // A welcome without the away list (version 1's layout) is truncated.
    const v1 = FIXTURES.get('session-welcome').subarray(0, awayCount - 1);
    assert.throws(() => decode(v1), isDecodeError('truncated'));
    // resume with a secret length of 255 and a 4-byte secret.
    const resume = Buffer.from(FIXTURES.get('session-resume'));
    resume[6] = 0xff; // kind(1) + version(1) + participant_id(4): the secret's length
    assert.throws(() => decode(resume), isDecodeError('truncated'));
  });

  test('an empty message is rejected', () => {
    assert.throws(() => decode(Buffer.alloc(0)), isDecodeError('truncated'));
  });

  test('decode accepts ArrayBuffer and Uint8Array input', () => {
    const bytes = FIXTURES.get('session-ack');
    const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    assert.deepStrictEqual(decode(ab), DESCRIBED['session-ack']);
    assert.deepStrictEqual(decode(new Uint8Array(ab)), DESCRIBED['session-ack']);
  });
});

describe('encoding', () => {
  test('u64 values above 2^53 round-trip as BigInt', () => {
    const max = (1n << 64n) - 1n;
    const frame = { type: 'ping', nonce: max };
    assert.equal(encode(frame).toString('hex'), '03ffffffffffffffff');
    assert.deepStrictEqual(decode(encode(frame)), frame);
    assert.deepStrictEqual(decode(encode({ type: 'ack', message_id: 1n << 63n, seq: 7 })), {
      type: 'ack',
      message_id: 1n << 63n,
      seq: 7n,
    });
  });

  test('a string payload is sent as UTF-8 and non-ASCII strings count bytes', () => {
    assert.deepStrictEqual(decode(encode({ type: 'send', to: 0, payload: 'é' })).payload, Buffer.from('c3a9', 'hex'));
    assert.equal(encode({ type: 'error', code: 2, message: 'é' }).toString('hex'), '8600020002c3a9');
  });

  test('values that do not fit their field are refused', () => {
    assert.throws(() => encode({ type: 'send', to: -1, payload: Buffer.alloc(0) }), RangeError);
    assert.throws(() => encode({ type: 'send', to: 2 ** 32, payload: Buffer.alloc(0) }), RangeError);
    assert.throws(() => encode({ type: 'ping', nonce: 1n << 64n }), RangeError);
    assert.throws(() => encode({ type: 'ping', nonce: 2 ** 60 }), RangeError); // unsafe number
    assert.throws(() => encode({ type: 'join', token: 'x'.repeat(65536) }), RangeError);
    assert.throws(() => encode({ type: 'join', token: '\ud800' }), TypeError); // lone surrogate
    const welcome = { ...DESCRIBED['session-welcome'], resume_secret: Buffer.alloc(256) };
    assert.throws(() => encode(welcome), RangeError);
    assert.throws(() => encode({ type: 'participant_left', seq: 1n, participant_id: 2, reason: 3 }), RangeError);
    assert.throws(() => encode({ type: 'nope' }), TypeError);
    // v2 fields.
    assert.throws(() => encode({ type: 'admit', participant_id: 3, admit: 2 }), RangeError);
    assert.throws(() => encode({ type: 'admit', participant_id: 3, admit: true }), RangeError);
    assert.throws(() => encode({ ...DESCRIBED['session-resume'], resume_secret: Buffer.alloc(256) }), RangeError);
    assert.throws(() => encode({ ...DESCRIBED['session-resume'], last_seq: -1 }), RangeError);
    assert.throws(() => encode({ ...DESCRIBED['session-resume'], participant_id: 2 ** 32 }), RangeError);
    assert.throws(() => encode({ ...DESCRIBED['session-welcome'], away: [2 ** 32] }), RangeError);
    assert.throws(() => encode({ ...DESCRIBED['session-welcome'], away: new Array(65536).fill(1) }), RangeError);
    assert.throws(() => encode({ type: 'resumed', seq: 1n, replayed: 2 ** 32 }), RangeError);
    assert.throws(() => encode({ type: 'participant_away', seq: 1n, participant_id: -1 }), RangeError);
    assert.throws(() => encode({ type: 'join_request', participant: { ...cy, role: 3 } }), RangeError);
  });

  test('the longest values that fit are accepted', () => {
    const token = 'x'.repeat(65535);
    assert.deepStrictEqual(decode(encode({ type: 'join', version: 2, token })), { type: 'join', version: 2, token });
    const welcome = { ...DESCRIBED['session-welcome'], resume_secret: Buffer.alloc(255, 7) };
    assert.deepStrictEqual(decode(encode(welcome)), welcome);
    const resume = { ...DESCRIBED['session-resume'], resume_secret: Buffer.alloc(255, 7), last_seq: (1n << 64n) - 1n };
    assert.deepStrictEqual(decode(encode(resume)), resume);
    const crowd = { ...DESCRIBED['session-welcome'], away: Array.from({ length: 65535 }, (_, i) => i + 1) };
    assert.deepStrictEqual(decode(encode(crowd)), crowd);
    const resumed = { type: 'resumed', seq: 1n << 63n, replayed: 2 ** 32 - 1 };
    assert.deepStrictEqual(decode(encode(resumed)), resumed);
  });

  test('defaults: join, resume and welcome take the protocol version, welcome an empty away list', () => {
    assert.equal(PROTOCOL_VERSION, 2);
    assert.equal(encode({ type: 'join', token: 'eyJ0' }).toString('hex'), FIXTURES.get('session-join').toString('hex'));
    const { version: _v, ...resume } = DESCRIBED['session-resume'];
    assert.equal(encode(resume).toString('hex'), FIXTURES.get('session-resume').toString('hex'));
    const { away: _a, ...welcome } = DESCRIBED['session-welcome'];
    assert.ok(encode(welcome).subarray(-2).equals(Buffer.from([0, 0])));
  });
});

describe('close codes', () => {
  test('are classified by their range', () => {
    assert.equal(closeCodeAction(1000), 'closed normally');
    assert.equal(closeCodeAction(4099), 'fix the client');
    assert.equal(closeCodeAction(4101), 'get a new token from the locator');
    assert.equal(closeCodeAction(4201), 'the session is gone or refused');
    assert.equal(closeCodeAction(4300), 'reconnect');
    assert.equal(closeCodeAction(4400), 'ask the locator again');
    assert.equal(closeCodeAction(4577), 'retry later');
    assert.equal(closeCodeAction(4900), 'unregistered code');
  });

  test('the table of section 2 is exactly the codes this client knows (the 46xx link codes aside)', () => {
    const rows = [...SESSION_SECTION.matchAll(/^\| (\d{4}) \| ([^|]+?) +\|/gm)];
    const table = Object.fromEntries(rows.map((m) => [m[1], m[2]]).filter(([code]) => !code.startsWith('46')));
    assert.ok(Object.keys(table).length > 20, 'the close code table was not found');
    assert.deepEqual(table, Object.fromEntries(Object.entries(CLOSE_NAME).map(([code, name]) => [code, name])));
    assert.deepEqual(Object.values(CLOSE).sort(), Object.keys(CLOSE_NAME).map(Number).sort());
  });

  test('resume follows drops, 4300 and 4301, not a leave, a refusal or the end of the session', () => {
    for (const code of [1001, 1005, 1006, 1011, CLOSE.slow_reader, CLOSE.connection_idle]) assert.ok(canResume(code), code);
    const notResumable = [
      CLOSE.normal, CLOSE.malformed, CLOSE.too_many_messages, CLOSE.token_invalid, CLOSE.resync_needed,
      CLOSE.resume_refused, CLOSE.session_ended, CLOSE.replaced, CLOSE.ended_by_host, CLOSE.not_admitted,
      CLOSE.host_gone, CLOSE.edge_shutting_down, CLOSE.internal_error,
    ];
    for (const code of notResumable) assert.ok(!canResume(code), code);
  });
});

// ---------------------------------------------------------------------------------------------
// Connections against a scripted edge: a websocket server in this process that answers as §2
// says (or breaks it on purpose), to check the client's handshakes and its bookkeeping.
// ---------------------------------------------------------------------------------------------

/**
 * Starts a websocket server; `script(ws, first, frames)` runs for each connection once its first
 * frame has arrived (`first`, decoded with `decodeFrame`), with `frames.next()` giving the later
 * ones.
 */
async function scriptedEdge(script, decodeFrame = decodeClientFrame) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  const closes = [];
  server.on('connection', (ws) => {
    const queue = [];
    const waiters = [];
    const frames = {
      next: () => (queue.length > 0 ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r))),
    };
    const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
    closes.push(closed);
    let started = false;
    ws.on('message', (data) => {
      const frame = decodeFrame(data);
      if (!started) {
        started = true;
        Promise.resolve(script(ws, frame, frames)).catch((e) => ws.close(4500, String(e.message).slice(0, 100)));
      } else if (waiters.length > 0) {
        waiters.shift()(frame);
      } else {
        queue.push(frame);
      }
    });
  });
  return {
    url: `ws://127.0.0.1:${server.address().port}/v1/sessions/s_test`,
    /** The close code of the n-th connection, as the edge saw it. */
    closeCode: (n = 0) => closes[n],
    stop: () => new Promise((resolve) => {
      for (const c of server.clients) c.terminate();
      server.close(resolve);
    }),
  };
}

const sendAll = (ws, ...frames) => {
  for (const f of frames) ws.send(encode(f, 'edge'), { binary: true });
};
const welcomeFor = (participant_id, seq, participants = [ada, bo], away = []) => ({
  type: 'welcome', version: 2, participant_id, seq, resume_secret: secret, participants, away,
});
const rejection = (code) => (e) => {
  assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${e?.stack ?? e}`);
  assert.equal(e.closeInfo?.code, code, e.message);
  return true;
};

describe('connections against a scripted edge', () => {
  test('join: welcome, then events; lastSeq follows events and acks', async (t) => {
    const edge = await scriptedEdge(async (ws, first, frames) => {
      assert.deepStrictEqual(first, { type: 'join', version: 2, token: 'tok' });
      // The welcome and the next frames in one go: none may be lost between connect() and next().
      sendAll(ws, welcomeFor(2, 5n, [ada, bo], [1]), { type: 'participant_back', seq: 7n, participant_id: 1 });
      const send = await frames.next();
      assert.deepStrictEqual(send, { type: 'send', message_id: 1n, to: 0, payload: Buffer.from('a') });
      sendAll(ws, { type: 'ack', message_id: 1n, seq: 9n });
    });
    t.after(edge.stop);
    const conn = await connect(edge.url, 'tok');
    assert.deepStrictEqual(conn.welcome.away, [1]);
    assert.equal(conn.participantId, 2);
    assert.deepStrictEqual(conn.resumeSecret, secret);
    assert.equal(conn.lastSeq, 5n);
    assert.deepStrictEqual(await conn.next(2000), { type: 'participant_back', seq: 7n, participant_id: 1 });
    assert.equal(conn.lastSeq, 7n);
    conn.send('a', { messageId: conn.nextMessageId() });
    assert.deepStrictEqual(conn.unacked, [{ message_id: 1n, to: 0, payload: 'a' }]);
    assert.deepStrictEqual(await conn.next(2000), { type: 'ack', message_id: 1n, seq: 9n });
    assert.equal(conn.lastSeq, 9n);
    assert.deepStrictEqual(conn.unacked, []);
    assert.deepStrictEqual(conn.resumeState(), { participantId: 2, resumeSecret: secret, lastSeq: 9n, highestMessageId: 1n, unacked: [] });
    conn.close();
    await conn.closed;
  });

  test('join with approval: waiting, pings while waiting, then welcome', async (t) => {
    const edge = await scriptedEdge(async (ws, first, frames) => {
      sendAll(ws, { type: 'waiting' });
      const ping = await frames.next();
      assert.equal(ping.type, 'ping');
      sendAll(ws, { type: 'pong', nonce: ping.nonce }, welcomeFor(3, 8n, [ada, bo, cy]), { type: 'message', seq: 10n, from: 1, to: 0, payload: Buffer.from('hi') });
    });
    t.after(edge.stop);
    let waited = 0;
    const conn = await connect(edge.url, 'tok', { pingIntervalMs: 20, onWaiting: () => waited++ });
    assert.equal(waited, 1);
    assert.equal(conn.welcome.participant_id, 3);
    const m = await conn.next(2000);
    assert.equal(m.type, 'message');
    assert.equal(conn.lastSeq, 10n);
    conn.close();
  });

  test('join with approval: a refused guest is rejected with 4206', async (t) => {
    const edge = await scriptedEdge((ws) => {
      sendAll(ws, { type: 'waiting' });
      setTimeout(() => ws.close(4206, 'not admitted'), 50);
    });
    t.after(edge.stop);
    let waited = false;
    await assert.rejects(connect(edge.url, 'tok', { onWaiting: () => (waited = true) }), rejection(CLOSE.not_admitted));
    assert.ok(waited);
  });

  test('join: session traffic while waiting, or anything but welcome/waiting first, closes with 4000', async (t) => {
    const early = { type: 'message', seq: 1n, from: 1, to: 0, payload: Buffer.alloc(0) };
    const edge = await scriptedEdge((ws, first) => {
      if (first.token === 'waits') sendAll(ws, { type: 'waiting' }, early);
      else if (first.token === 'twice') sendAll(ws, { type: 'waiting' }, { type: 'waiting' });
      else sendAll(ws, first.token === 'resumed' ? { type: 'resumed', seq: 1n, replayed: 0 } : early);
    });
    t.after(edge.stop);
    let n = 0;
    for (const token of ['waits', 'twice', 'resumed', 'early']) {
      await assert.rejects(connect(edge.url, token), (e) => e instanceof ConnectError && e.closeCode === 4000, token);
      assert.equal(await edge.closeCode(n++), 4000, token);
    }
  });

  test('join: a welcome of another version closes with 4003', async (t) => {
    const edge = await scriptedEdge((ws) => sendAll(ws, { ...welcomeFor(2, 0n), version: 1 }));
    t.after(edge.stop);
    await assert.rejects(connect(edge.url, 'tok'), (e) => e instanceof ConnectError && e.closeCode === 4003);
    assert.equal(await edge.closeCode(), 4003);
  });

  test('resume: resumed, the replayed events, then re-sends', async (t) => {
    const edge = await scriptedEdge(async (ws, first, frames) => {
      assert.deepStrictEqual(first, DESCRIBED['session-resume']);
      sendAll(
        ws,
        { type: 'resumed', seq: 12n, replayed: 2 },
        { type: 'participant_away', seq: 10n, participant_id: 1 },
        { type: 'message', seq: 12n, from: 3, to: 2, payload: Buffer.from('x') },
      );
      // The re-send of the unacknowledged message 7, right after resumed.
      assert.deepStrictEqual(await frames.next(), { type: 'send', message_id: 7n, to: 0, payload: Buffer.from('r') });
      sendAll(ws, { type: 'ack', message_id: 7n, seq: 11n }, { type: 'participant_back', seq: 13n, participant_id: 1 });
    });
    t.after(edge.stop);
    const conn = await resume(edge.url, 2, secret, 9n, {
      highestMessageId: 7n,
      resend: [{ message_id: 7n, to: 0, payload: Buffer.from('r') }],
    });
    assert.equal(conn.welcome, null);
    assert.deepStrictEqual(conn.resumed, { type: 'resumed', seq: 12n, replayed: 2 });
    assert.equal(conn.participantId, 2);
    assert.equal(conn.lastSeq, 9n);
    assert.equal(conn.replayPending, 2);
    assert.equal((await conn.next(2000)).type, 'participant_away');
    assert.equal(conn.replayPending, 1);
    assert.equal((await conn.next(2000)).type, 'message');
    assert.equal(conn.replayPending, 0);
    assert.equal(conn.lastSeq, 12n);
    // The ack of a re-send carries its original seq, below lastSeq: lastSeq stays.
    assert.deepStrictEqual(await conn.next(2000), { type: 'ack', message_id: 7n, seq: 11n });
    assert.equal(conn.lastSeq, 12n);
    assert.deepStrictEqual(conn.unacked, []);
    assert.equal((await conn.next(2000)).seq, 13n);
    assert.throws(() => conn.send('again', { messageId: 7 }), RangeError);
    assert.equal(conn.nextMessageId(), 8n);
    conn.close();
  });

  test('resume: refusals are rejected with their close code', async (t) => {
    const edge = await scriptedEdge((ws, first) => ws.close(first.last_seq === 1n ? 4105 : 4106, 'no'));
    t.after(edge.stop);
    await assert.rejects(resume(edge.url, 2, secret, 1n), rejection(CLOSE.resync_needed));
    await assert.rejects(resume(edge.url, 2, secret, 2n), rejection(CLOSE.resume_refused));
  });

  test('resume: an answer that cannot be right closes with 4000', async (t) => {
    const edge = await scriptedEdge((ws, first) => {
      const answers = {
        1: [{ type: 'resumed', seq: 8n, replayed: 0 }], // below last_seq 9
        2: [{ type: 'resumed', seq: 10n, replayed: 2 }], // two replayed events, one number
        3: [{ type: 'pong', nonce: 1n }], // not resumed
      };
      sendAll(ws, ...answers[first.participant_id]);
    });
    t.after(edge.stop);
    for (const pid of [1, 2, 3]) {
      await assert.rejects(resume(edge.url, pid, secret, 9n), (e) => e instanceof ConnectError && e.closeCode === 4000, `case ${pid}`);
      assert.equal(await edge.closeCode(pid - 1), 4000);
    }
  });

  test('events out of order, or replayed beyond resumed.seq, close the connection with 4000', async (t) => {
    const edge = await scriptedEdge((ws, first) => {
      if (first.type === 'join') {
        // seq 5 is the welcome's: the first event must be above it.
        sendAll(ws, welcomeFor(2, 5n), { type: 'message', seq: 5n, from: 1, to: 0, payload: Buffer.alloc(0) });
      } else {
        sendAll(ws, { type: 'resumed', seq: 12n, replayed: 1 }, { type: 'participant_back', seq: 13n, participant_id: 1 });
      }
    });
    t.after(edge.stop);
    const joined = await connect(edge.url, 'tok');
    assert.equal(await joined.next(2000), null);
    assert.equal(joined.closeInfo.code, 4000);
    assert.match(joined.protocolError.message, /seq 5, not above 5/);
    assert.equal(await edge.closeCode(0), 4000);
    const resumed = await resume(edge.url, 2, secret, 9n);
    assert.equal(await resumed.next(2000), null);
    assert.equal(resumed.closeInfo.code, 4000);
    assert.match(resumed.protocolError.message, /above resumed.seq 12/);
  });

  test('message ids must increase; an error answers the oldest unacknowledged send', async (t) => {
    const edge = await scriptedEdge(async (ws, first, frames) => {
      sendAll(ws, welcomeFor(2, 0n));
      await frames.next();
      await frames.next();
      sendAll(ws, { type: 'error', code: ERROR_CODE.unknown_recipient, message: 'no 9' });
    });
    t.after(edge.stop);
    const conn = await connect(edge.url, 'tok');
    conn.send('to 9', { to: 9, messageId: 3 });
    conn.send('to all', { messageId: 4 });
    for (const id of [1, 3, 4n]) assert.throws(() => conn.send('x', { messageId: id }), RangeError);
    assert.throws(() => conn.send('x', { messageId: -1 }), RangeError);
    const error = await conn.next(2000);
    assert.equal(error.code, ERROR_CODE.unknown_recipient);
    assert.deepStrictEqual(conn.unacked.map((e) => e.message_id), [4n]);
    conn.close();
  });
});

// ---------------------------------------------------------------------------------------------
// Presence (§2b) against a scripted edge, and its placement request (§1) against a scripted
// locator.
// ---------------------------------------------------------------------------------------------

const sendPresence = (ws, ...frames) => {
  for (const f of frames) ws.send(encodePresence(f), { binary: true });
};
const member = (user_id, connections = 1) => ({ user_id, display_name: user_id.toUpperCase(), connections });
const snapshot = (seq, members, sessions = []) => ({ type: 'snapshot', seq, members, sessions });

describe('presence connections against a scripted edge', () => {
  test('hello, the first snapshot, later snapshots and pongs in order', async (t) => {
    const edge = await scriptedEdge(async (ws, first, frames) => {
      assert.deepStrictEqual(first, { type: 'hello', version: 1, token: 'ptok' });
      sendPresence(ws, snapshot(3n, [member('ada')]), snapshot(5n, [member('ada'), member('bo')], ['s_2', 's_1']));
      assert.deepStrictEqual(await frames.next(), { type: 'ping', nonce: 0xfedcba9876543210n });
      sendPresence(ws, { type: 'pong', nonce: 0xfedcba9876543210n }, snapshot(6n, [member('bo')]));
    }, decodePresenceClientFrame);
    t.after(edge.stop);
    const conn = await connectPresence(edge.url, 'ptok');
    assert.deepStrictEqual(conn.first, snapshot(3n, [member('ada')]));
    const second = await conn.next(2000);
    assert.deepStrictEqual(second.sessions, ['s_2', 's_1']);
    conn.ping(0xfedcba9876543210n);
    assert.deepStrictEqual(await conn.next(2000), { type: 'pong', nonce: 0xfedcba9876543210n });
    assert.equal((await conn.next(2000)).seq, 6n);
    assert.equal(conn.latest.seq, 6n);
    conn.close();
    assert.equal((await conn.closed).code, 1000);
    assert.equal(await conn.next(), null);
  });

  test('keep-alive pings are sent and their pongs kept from the application', async (t) => {
    let pings = 0;
    const edge = await scriptedEdge(async (ws, first, frames) => {
      sendPresence(ws, snapshot(1n, [member('ada')]));
      for (;;) {
        const f = await frames.next();
        assert.equal(f.type, 'ping');
        pings += 1;
        sendPresence(ws, { type: 'pong', nonce: f.nonce });
        if (pings === 3) sendPresence(ws, snapshot(2n, []));
      }
    }, decodePresenceClientFrame);
    t.after(edge.stop);
    const conn = await connectPresence(edge.url, 'ptok', { keepAliveMs: 10 });
    const next = await conn.next(2000);
    assert.deepStrictEqual(next, snapshot(2n, []));
    assert.ok(pings >= 3);
    conn.close();
  });

  test('a refused hello is rejected with its close code', async (t) => {
    const edge = await scriptedEdge((ws, first) => ws.close(first.version === 1 ? 4102 : 4003, 'no'), decodePresenceClientFrame);
    t.after(edge.stop);
    await assert.rejects(connectPresence(edge.url, 'session-token'), rejection(CLOSE.token_other_session));
    await assert.rejects(connectPresence(edge.url, 'ptok', { version: 2 }), rejection(CLOSE.bad_version));
  });

  test('a first frame other than a snapshot closes with 4000, a session frame with 4001', async (t) => {
    const edge = await scriptedEdge((ws, first) => {
      if (first.token === 'pong') sendPresence(ws, { type: 'pong', nonce: 1n });
      else if (first.token === 'unsorted') sendPresence(ws, snapshot(1n, [member('bo'), member('ada')]));
      else sendAll(ws, welcomeFor(1, 0n));
    }, decodePresenceClientFrame);
    t.after(edge.stop);
    const cases = [['pong', 4000], ['unsorted', 4000], ['welcome', 4001]];
    for (const [i, [token, code]] of cases.entries()) {
      await assert.rejects(connectPresence(edge.url, token), (e) => e instanceof ConnectError && e.closeCode === code, token);
      assert.equal(await edge.closeCode(i), code, token);
    }
  });

  test('a snapshot whose seq does not rise, or that breaks its rules, closes with 4000', async (t) => {
    const edge = await scriptedEdge((ws, first) => {
      const later = {
        same: snapshot(4n, [member('ada')]),
        lower: snapshot(3n, [member('ada')]),
        twice: snapshot(5n, [member('ada'), member('ada')]),
        offline: snapshot(5n, [member('ada', 0)]),
      }[first.token];
      sendPresence(ws, snapshot(4n, [member('ada')]), later);
    }, decodePresenceClientFrame);
    t.after(edge.stop);
    for (const [i, token] of ['same', 'lower', 'twice', 'offline'].entries()) {
      const conn = await connectPresence(edge.url, token);
      assert.equal(await conn.next(2000), null, token);
      assert.equal(conn.closeInfo.code, 4000, token);
      assert.ok(conn.protocolError, token);
      assert.equal(conn.latest.seq, 4n, token);
      assert.equal(await edge.closeCode(i), 4000, token);
    }
  });

  test('a hello over 16 KiB is refused before anything is sent', async (t) => {
    assert.equal(PRESENCE_MAX_CLIENT_MESSAGE_BYTES, 16384);
    let tokenLength = null;
    const edge = await scriptedEdge((ws, first) => {
      tokenLength = first.token.length;
      sendPresence(ws, snapshot(1n, []));
    }, decodePresenceClientFrame);
    t.after(edge.stop);
    // kind(1) + version(1) + length(2) + token: 16,380 bytes of token make 16 KiB exactly.
    assert.throws(() => connectPresence(edge.url, 'x'.repeat(16381)), RangeError);
    const conn = await connectPresence(edge.url, 'x'.repeat(16380));
    assert.equal(tokenLength, 16380);
    conn.close();
  });
});

/** A locator answering every request with `answer(req)`: `{ status, body }`; records the requests. */
async function scriptedLocator(answer) {
  const requests = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      const { status, body: out } = answer(req);
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(typeof out === 'string' ? out : JSON.stringify(out));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    requests,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}

describe('presence placement (GET /api/v1/teams/{team}/presence) against a scripted locator', () => {
  const answerFor = (team) => ({
    team,
    edge: { id: 'edge-1', region: 'eu', url: 'ws://10.0.0.5:8081/v1/teams/platform/presence' },
    token: 'eyJ0',
    expires_at: '2026-11-23T10:15:00Z',
  });

  test('team percent-encoded in the path, user and name as query parameters, no body', async (t) => {
    const locator = await scriptedLocator((req) => ({ status: 200, body: answerFor(req.url.startsWith('/api/v1/teams/platform/') ? 'platform' : 'a/b é+') }));
    t.after(locator.stop);
    assert.deepStrictEqual(await getPresence(locator.url, 'platform'), answerFor('platform'));
    await getPresence(locator.url, 'a/b é+', { user: 'ada+1@example.com', name: 'Ada L&Co' });
    const [plain, full] = locator.requests;
    assert.equal(plain.method, 'GET');
    assert.equal(plain.url, '/api/v1/teams/platform/presence');
    assert.equal(plain.body, '');
    assert.equal(plain.headers['content-type'], undefined);
    assert.equal(full.url, '/api/v1/teams/a%2Fb%20%C3%A9%2B/presence?user=ada%2B1%40example.com&name=Ada%20L%26Co');
  });

  test('the teams . and .. are refused: a URL cannot carry them as a path segment', async () => {
    // WHATWG URLs take "..", ".%2e", "%2e." and "%2e%2e" for a dot segment and remove it.
    assert.equal(new URL('http://h/api/v1/teams/%2e%2e/presence').pathname, '/api/v1/presence');
    await assert.rejects(getPresence('http://127.0.0.1:9', '..'), TypeError);
    await assert.rejects(getPresence('http://127.0.0.1:9', '.'), TypeError);
  });

  test('errors are PlacementErrors with the status and the stable code', async (t) => {
    const locator = await scriptedLocator((req) =>
      req.url.includes('busy')
        ? { status: 503, body: { error: { code: 'no_edge_available', message: 'none' } } }
        : { status: 400, body: { error: { code: 'bad_request', message: 'unknown parameter' } } },
    );
    t.after(locator.stop);
    await assert.rejects(getPresence(locator.url, 'busy'), (e) => e instanceof PlacementError && e.status === 503 && e.code === 'no_edge_available');
    await assert.rejects(getPresence(locator.url, 't', { user: 'u' }), (e) => e instanceof PlacementError && e.status === 400 && e.code === 'bad_request');
  });

  test('an answer without the fields of §1 is refused', async (t) => {
    const broken = [
      { ...answerFor('other') },
      { ...answerFor('t'), token: '' },
      { ...answerFor('t'), edge: { id: 'edge-1', region: 'eu', url: 'http://x/' } },
      { ...answerFor('t'), edge: { id: 'edge-1', url: 'ws://x/' } },
      { ...answerFor('t'), expires_at: 'tomorrow' },
    ];
    let i = 0;
    const locator = await scriptedLocator(() => ({ status: 200, body: broken[i++] }));
    t.after(locator.stop);
    for (const _ of broken) {
      await assert.rejects(getPresence(locator.url, 't'), (e) => e instanceof PlacementError && e.code === 'bad_answer');
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Media frames (§2 "Media (version 3)") beyond the examples: strictness, limits, and a version-3
// connection against a scripted edge.
// ---------------------------------------------------------------------------------------------

describe('media frames (version 3)', () => {
  test('unknown sources, mute values and close reasons are rejected', () => {
    const publish = Buffer.from(FIXTURES.get('session-track-publish'));
    for (const source of [0, 5, 0xff]) {
      publish[4] = source; // kind(1) + mid(2 + 1): the source byte
      assert.throws(() => decode(publish), isDecodeError('bad_value'));
    }
    const mute = Buffer.from(FIXTURES.get('session-track-mute'));
    mute[4] = 2;
    assert.throws(() => decode(mute), isDecodeError('bad_value'));
    const published = Buffer.from(FIXTURES.get('session-track-published'));
    published[9] = 0; // kind(1) + track_id(4) + participant_id(4): the source
    assert.throws(() => decode(published), isDecodeError('bad_value'));
    published[9] = TRACK_SOURCE.screen_audio;
    published[10] = 7; // muted
    assert.throws(() => decode(published), isDecodeError('bad_value'));
    const muted = Buffer.from(FIXTURES.get('session-track-muted'));
    muted[5] = 0xff;
    assert.throws(() => decode(muted), isDecodeError('bad_value'));
    const closed = Buffer.from(FIXTURES.get('session-media-closed'));
    closed[1] = 4;
    assert.throws(() => decode(closed), isDecodeError('bad_value'));
    for (const reason of Object.values(MEDIA_CLOSE_REASON)) {
      assert.deepStrictEqual(decode(Buffer.from([EDGE_KIND.media_closed, reason])), { type: 'media_closed', reason });
    }
  });

  test('a text is u32-length UTF-8 of at most 524,288 bytes', () => {
    // media_offer whose SDP is ff: not UTF-8.
    assert.throws(() => decode(Buffer.from('0800000001ff', 'hex')), isDecodeError('bad_utf8'));
    // A length beyond the message is a truncation; beyond the limit, a bad value whatever follows.
    assert.throws(() => decode(Buffer.from('080000000a763d30', 'hex')), isDecodeError('truncated'));
    const over = Buffer.alloc(1 + 4 + MAX_TEXT_BYTES + 1, 0x61);
    over[0] = CLIENT_KIND.media_offer;
    over.writeUInt32BE(MAX_TEXT_BYTES + 1, 1);
    assert.throws(() => decode(over), isDecodeError('bad_value'));
    const longest = 'a'.repeat(MAX_TEXT_BYTES);
    assert.deepStrictEqual(decode(encode({ type: 'media_offer', sdp: longest }, 'client')), { type: 'media_offer', sdp: longest });
    assert.throws(() => encode({ type: 'media_offer', sdp: `${longest}a` }, 'client'), RangeError);
    // Bytes, not characters: 262,145 two-byte characters are 2 bytes over.
    assert.throws(() => encode({ type: 'media_answer', sdp: 'é'.repeat(MAX_TEXT_BYTES / 2 + 1) }, 'edge'), RangeError);
    assert.throws(() => encode({ type: 'media_offer', offer_id: 1, sdp: '\ud800' }, 'edge'), TypeError);
  });

  test('the names of both directions need a direction; a kind goes only its own way', () => {
    assert.throws(() => encode({ type: 'media_offer', sdp: SDP }), TypeError);
    assert.throws(() => encode({ type: 'media_answer', sdp: SDP }), TypeError);
    assert.throws(() => encode({ type: 'track_published', ...DESCRIBED['session-track-published'] }, 'client'), TypeError);
    assert.throws(() => encode({ type: 'media_leave' }, 'edge'), TypeError);
    assert.throws(() => encode({ type: 'ping', nonce: 1n }, 'sideways'), TypeError);
    // The same name, two layouts.
    assert.equal(encode({ type: 'media_answer', offer_id: 2, sdp: SDP }, 'client').toString('hex'), FIXTURES.get('session-media-answer').toString('hex'));
    assert.equal(encode({ type: 'media_answer', sdp: SDP }, 'edge').toString('hex'), FIXTURES.get('session-edge-media-answer').toString('hex'));
    assert.throws(() => encode({ type: 'media_answer', sdp: SDP }, 'client'), RangeError); // no offer_id
  });

  test('values that do not fit are refused; muted takes a boolean too', () => {
    assert.throws(() => encode({ type: 'track_publish', mid: '0', source: 5 }), RangeError);
    assert.throws(() => encode({ type: 'track_publish', mid: '0', source: 0 }), RangeError);
    assert.throws(() => encode({ type: 'track_mute', mid: '0', muted: 2 }), RangeError);
    assert.throws(() => encode({ type: 'track_muted', track_id: 2 ** 32, muted: 0 }), RangeError);
    assert.throws(() => encode({ type: 'media_closed', reason: 4 }), RangeError);
    assert.throws(() => encode({ type: 'media_candidate', candidate: 'x'.repeat(65536) }), RangeError);
    assert.equal(encode({ type: 'track_mute', mid: '0', muted: true }).toString('hex'), FIXTURES.get('session-track-mute').toString('hex'));
    assert.deepStrictEqual(decode(encode({ type: 'track_muted', track_id: 5, muted: false })), { type: 'track_muted', track_id: 5, muted: 0 });
  });

  test('a version-3 join, media signalling both ways', async (t) => {
    const edge = await scriptedEdge(async (ws, first, frames) => {
      assert.deepStrictEqual(first, { type: 'join', version: 3, token: 'tok' });
      sendAll(ws, { ...welcomeFor(2, 1n), version: 3 });
      assert.deepStrictEqual(await frames.next(), { type: 'track_publish', mid: '0', source: TRACK_SOURCE.microphone });
      assert.deepStrictEqual(await frames.next(), { type: 'media_offer', sdp: 'offer' });
      assert.deepStrictEqual(await frames.next(), { type: 'media_candidate', candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host' });
      assert.deepStrictEqual(await frames.next(), { type: 'media_candidate', candidate: '' });
      sendAll(
        ws,
        { type: 'media_answer', sdp: 'answer' },
        { type: 'track_published', track_id: 9, participant_id: 1, source: TRACK_SOURCE.camera, muted: 0, mid: '1' },
        { type: 'media_offer', offer_id: 1, sdp: 're-offer' },
      );
      assert.deepStrictEqual(await frames.next(), { type: 'media_answer', offer_id: 1, sdp: 're-answer' });
      assert.deepStrictEqual(await frames.next(), { type: 'track_mute', mid: '0', muted: 1 });
      assert.deepStrictEqual(await frames.next(), { type: 'media_leave' });
      sendAll(
        ws,
        { type: 'track_muted', track_id: 9, muted: 1 },
        { type: 'track_unpublished', track_id: 9 },
        { type: 'error', code: ERROR_CODE.unknown_track, message: 'no track on mid 7' },
        { type: 'media_closed', reason: MEDIA_CLOSE_REASON.left },
      );
    });
    t.after(edge.stop);
    const conn = await connect(edge.url, 'tok', { version: MEDIA_PROTOCOL_VERSION });
    assert.equal(conn.version, 3);
    conn.trackPublish('0', TRACK_SOURCE.microphone);
    conn.mediaOffer('offer');
    conn.mediaCandidate('candidate:1 1 udp 1 127.0.0.1 5000 typ host');
    conn.mediaCandidate('');
    assert.deepStrictEqual(await conn.next(2000), { type: 'media_answer', sdp: 'answer' });
    assert.equal((await conn.next(2000)).type, 'track_published');
    assert.deepStrictEqual(await conn.next(2000), { type: 'media_offer', offer_id: 1, sdp: 're-offer' });
    conn.mediaAnswer(1, 're-answer');
    conn.trackMute('0', true);
    conn.mediaLeave();
    assert.deepStrictEqual(await conn.next(2000), { type: 'track_muted', track_id: 9, muted: 1 });
    assert.deepStrictEqual(await conn.next(2000), { type: 'track_unpublished', track_id: 9 });
    assert.equal((await conn.next(2000)).code, 8);
    assert.deepStrictEqual(await conn.next(2000), { type: 'media_closed', reason: 0 });
    assert.equal(conn.lastSeq, 1n, 'media frames carry no seq');
    assert.equal(conn.protocolError, null);
    conn.close();
    await conn.closed;
  });

  test('a version-2 connection sends no media frame and closes on one with 4001', async (t) => {
    const edge = await scriptedEdge((ws) => sendAll(ws, welcomeFor(2, 1n), { type: 'media_closed', reason: 3 }));
    t.after(edge.stop);
    const conn = await connect(edge.url, 'tok');
    assert.equal(conn.version, PROTOCOL_VERSION);
    assert.throws(() => conn.mediaOffer('v=0'), /version 3/);
    assert.equal((await conn.closed).code, CLOSE.unknown_kind);
    assert.equal(conn.protocolError?.reason, 'unknown_kind');
    assert.equal(await edge.closeCode(), 4001);
  });

  test('a welcome of another version than the join closes with 4003; unknown versions are refused', async (t) => {
    const edge = await scriptedEdge((ws) => sendAll(ws, welcomeFor(2, 0n))); // version 2
    t.after(edge.stop);
    await assert.rejects(connect(edge.url, 'tok', { version: 3 }), (e) => e instanceof ConnectError && e.closeCode === 4003);
    assert.throws(() => connect(edge.url, 'tok', { version: 4 }), RangeError);
    assert.throws(() => resume(edge.url, 2, secret, 0n, { version: 1 }), RangeError);
  });

  test('resume with version 3 keeps media', async (t) => {
    const edge = await scriptedEdge(async (ws, first) => {
      assert.equal(first.version, 3);
      sendAll(ws, { type: 'resumed', seq: 9n, replayed: 0 }, { type: 'track_unpublished', track_id: 1 });
    });
    t.after(edge.stop);
    const conn = await resume(edge.url, 2, secret, 9n, { version: 3 });
    assert.deepStrictEqual(await conn.next(2000), { type: 'track_unpublished', track_id: 1 });
    conn.close();
  });
});
