// Checks this client's encoder and decoder against the byte-level examples in docs/protocol.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decode, encode, DecodeError } from './duet-client.mjs';

/** Every `<!-- fixture: NAME -->` example of the document, as bytes. */
function examples() {
  const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
  const found = new Map();
  const re = /<!-- fixture: ([a-z0-9-]+) -->\s*```hex\n([\s\S]*?)```/g;
  for (const m of doc.matchAll(re)) {
    found.set(m[1], Buffer.from(m[2].replace(/\s+/g, ''), 'hex'));
  }
  return found;
}

const ada = { id: 1, role: 'host', userId: 'ada', displayName: 'Ada' };
const bo = { id: 2, role: 'guest', userId: 'bo', displayName: 'Bo' };

// The messages the prose around each example describes.
const described = {
  'session-join': { type: 'join', version: 1, token: 'eyJ0' },
  'session-send': { type: 'send', messageId: 42n, to: 0, payload: Buffer.from('hi') },
  'session-send-direct': { type: 'send', messageId: 0n, to: 2, payload: Buffer.from('k') },
  'session-ping': { type: 'ping', nonce: 1n },
  'session-pong': { type: 'pong', nonce: 1n },
  'session-leave': { type: 'leave' },
  'session-welcome': {
    type: 'welcome',
    version: 1,
    participantId: 2,
    seq: 5n,
    resumeSecret: Buffer.from([0xab, 0xab, 0xab, 0xab]),
    participants: [ada, bo],
  },
  'session-participant-joined': { type: 'participant_joined', seq: 6n, participant: ada },
  'session-participant-left': { type: 'participant_left', seq: 7n, participantId: 2, reason: 1 },
  'session-message': { type: 'message', seq: 8n, from: 1, to: 0, payload: Buffer.from('hi') },
  'session-ack': { type: 'ack', messageId: 42n, seq: 8n },
  'session-error': { type: 'error', code: 1, message: 'no 9' },
};

test('the document shows an example for every session frame', () => {
  const docs = examples();
  for (const name of Object.keys(described)) assert.ok(docs.has(name), `no example ${name}`);
});

for (const [name, frame] of Object.entries(described)) {
  test(`${name}: encoding matches the document`, () => {
    assert.deepEqual(encode(frame), examples().get(name));
  });
  test(`${name}: decoding gives the described message`, () => {
    assert.deepEqual(decode(examples().get(name)), frame);
  });
}

test('truncated frames are rejected at every cut', () => {
  for (const [name, bytes] of examples()) {
    if (!name.startsWith('session-')) continue;
    for (let cut = 0; cut < bytes.length; cut++) {
      assert.throws(() => decode(bytes.subarray(0, cut)), DecodeError, `${name} cut at ${cut}`);
    }
  }
});

test('trailing bytes, unknown kinds and bad UTF-8 are rejected', () => {
  const ping = examples().get('session-ping');
  assert.throws(() => decode(Buffer.concat([ping, Buffer.from([0])])), /trailing/);
  assert.throws(() => decode(Buffer.from([0x7e])), /unknown frame kind 0x7e/);
  assert.throws(() => decode(Buffer.from([0x01, 0x01, 0x00, 0x02, 0xff, 0xfe])), /UTF-8/);
  assert.throws(() => decode(Buffer.from([0x83, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 9])), /reason/);
});
