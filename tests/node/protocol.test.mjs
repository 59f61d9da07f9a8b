// Checks this client's encoder and decoder against the byte-level examples of docs/protocol.md
// (§2 "Byte-level examples"), and that the decoder is strict (§2: "A message must contain exactly
// its fields").
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  closeCodeAction,
  decode,
  decodeClientFrame,
  decodeEdgeFrame,
  DecodeError,
  encode,
  ROLE,
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

// The message each example describes, built from the prose above it.
const ada = { id: 1, role: ROLE.host, user_id: 'ada', display_name: 'Ada' };
const bo = { id: 2, role: ROLE.guest, user_id: 'bo', display_name: 'Bo' };
const DESCRIBED = {
  // "`join` with version 1 and the token `eyJ0`"
  'session-join': { type: 'join', version: 1, token: 'eyJ0' },
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
  // the host (1, user `ada`, name `Ada`) and the guest itself (2, `bo`, `Bo`)". The prose does
  // not state `version`; 1 is the only protocol version.
  'session-welcome': {
    type: 'welcome',
    version: 1,
    participant_id: 2,
    seq: 5n,
    resume_secret: Buffer.from([0xab, 0xab, 0xab, 0xab]),
    participants: [ada, bo],
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
};
const CLIENT_SIDE = new Set(['join', 'send', 'ping', 'leave']);

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

  test('every frame kind of section 2 has an example', () => {
    const kinds = new Set(Object.values(DESCRIBED).map((f) => f.type));
    assert.deepEqual([...kinds].sort(), [
      'ack', 'error', 'join', 'leave', 'message', 'participant_joined',
      'participant_left', 'ping', 'pong', 'send', 'welcome',
    ]);
  });

  for (const [name, frame] of Object.entries(DESCRIBED)) {
    describe(name, () => {
      const bytes = FIXTURES.get(name);

      test('encodes to exactly the example bytes', () => {
        assert.ok(bytes, `no fixture ${name} in the document`);
        assert.equal(encode(frame).toString('hex'), bytes.toString('hex'));
      });

      test('decodes to the described values', () => {
        assert.deepStrictEqual(decode(bytes), frame);
        // The kind byte tells the direction (§2: 0x01-0x7f client to edge, 0x81-0xff edge to client).
        if (CLIENT_SIDE.has(frame.type)) {
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

describe('strict decoding', () => {
  test('unknown kinds are rejected with 4001', () => {
    for (const kind of [0x00, 0x05, 0x7f, 0x80, 0x88, 0xff]) {
      assert.throws(() => decode(Buffer.from([kind, 0, 0, 0, 0, 0, 0, 0, 0])), isDecodeError('unknown_kind'));
    }
  });

  test('invalid UTF-8 in a str is rejected', () => {
    // join(1, token = ff fe): not UTF-8.
    assert.throws(() => decode(Buffer.from('01010002fffe', 'hex')), isDecodeError('bad_utf8'));
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
  });

  test('a declared length beyond the message is a truncation', () => {
    // send with a payload length of 2^32-1 and no payload.
    const send = Buffer.from('02' + '00'.repeat(8) + '00000000' + 'ffffffff', 'hex');
    assert.throws(() => decode(send), isDecodeError('truncated'));
    // welcome announcing 3 participants but holding 2.
    const welcome = Buffer.from(FIXTURES.get('session-welcome'));
    welcome[20] = 3; // low byte of count
    assert.throws(() => decode(welcome), isDecodeError('truncated'));
    // welcome announcing 1 participant but holding 2.
    welcome[20] = 1;
    assert.throws(() => decode(welcome), isDecodeError('trailing'));
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
  });

  test('the longest values that fit are accepted', () => {
    const token = 'x'.repeat(65535);
    assert.deepStrictEqual(decode(encode({ type: 'join', version: 1, token })), { type: 'join', version: 1, token });
    const welcome = { ...DESCRIBED['session-welcome'], resume_secret: Buffer.alloc(255, 7) };
    assert.deepStrictEqual(decode(encode(welcome)), welcome);
  });
});

test('close codes are classified by their range', () => {
  assert.equal(closeCodeAction(1000), 'closed normally');
  assert.equal(closeCodeAction(4099), 'fix the client');
  assert.equal(closeCodeAction(4101), 'get a new token from the locator');
  assert.equal(closeCodeAction(4201), 'the session is gone or refused');
  assert.equal(closeCodeAction(4300), 'reconnect');
  assert.equal(closeCodeAction(4400), 'ask the locator again');
  assert.equal(closeCodeAction(4577), 'retry later');
  assert.equal(closeCodeAction(4900), 'unregistered code');
});
