// End-to-end check of this independent client against a running duet:
//   node host-and-join.mjs http://127.0.0.1:8080
// Prints "node client: ok" and exits 0, or prints what failed and exits 1 (20 s at most).
import assert from 'node:assert/strict';
import { connect, createSession, describe, joinSession, open, encode } from './duet-client.mjs';

const locator = process.argv[2];
if (!locator) {
  console.error('usage: node host-and-join.mjs <locator url>');
  process.exit(2);
}
const overall = setTimeout(() => {
  console.error('node client: FAILED: no result within 20 s');
  process.exit(1);
}, 20000);

/** Next event of `type`, skipping none: anything else fails. */
async function expect(conn, type) {
  return conn.expect(type, 10000);
}

async function main() {
  // 1. Host creates the session and joins.
  const placed = await createSession(locator, { user: { id: 'node-host', name: 'Node Host' } });
  assert.equal(placed.role, 'host');
  assert.equal(placed.participant_id, 1);
  assert.match(placed.edge.url, /^wss?:\/\//);
  assert.ok(!Number.isNaN(Date.parse(placed.expires_at)), 'expires_at is RFC 3339');
  const { conn: host, welcome: hostWelcome } = await connect(placed.edge.url, placed.token);
  assert.equal(hostWelcome.participantId, 1);
  assert.equal(hostWelcome.participants.length, 1);

  // 2. A guest joins through the locator and connects.
  const joined = await joinSession(locator, placed.session_id, { user: { id: 'node-guest', name: 'Node Guest' } });
  assert.equal(joined.role, 'guest');
  assert.equal(joined.edge.url, placed.edge.url, 'a session lives on one edge');
  const { conn: guest, welcome } = await connect(joined.edge.url, joined.token);
  assert.equal(welcome.participantId, joined.participant_id);
  assert.deepEqual(
    welcome.participants.map((p) => [p.id, p.role, p.userId, p.displayName]),
    [
      [1, 'host', 'node-host', 'Node Host'],
      [joined.participant_id, 'guest', 'node-guest', 'Node Guest'],
    ],
  );
  assert.equal(welcome.resumeSecret.length > 0, true);
  const seen = await expect(host, 'participant_joined');
  assert.equal(seen.participant.id, joined.participant_id);
  assert.equal(seen.participant.displayName, 'Node Guest');
  assert.ok(seen.seq > welcome.seq, 'the guest join is numbered after the welcome seq');

  // 3. Twenty messages from the host, in order, each acknowledged with the seq the guest saw.
  for (let i = 1; i <= 20; i++) host.send(`line ${i}`, { messageId: BigInt(i) });
  const guestSeqs = [];
  for (let i = 1; i <= 20; i++) {
    const m = await expect(guest, 'message');
    assert.equal(m.from, 1);
    assert.equal(m.to, 0);
    assert.equal(m.payload.toString(), `line ${i}`);
    if (guestSeqs.length) assert.ok(m.seq > guestSeqs.at(-1), 'seq strictly increases');
    guestSeqs.push(m.seq);
  }
  for (let i = 1; i <= 20; i++) {
    const a = await expect(host, 'ack');
    assert.equal(a.messageId, BigInt(i));
    assert.equal(a.seq, guestSeqs[i - 1]);
  }

  // 4. A message addressed to the host only.
  guest.send('for your eyes', { to: 1 });
  const direct = await expect(host, 'message');
  assert.equal(direct.to, 1);
  assert.equal(direct.from, joined.participant_id);
  assert.equal(direct.payload.toString(), 'for your eyes');

  // 5. Ping and pong.
  guest.ping(4242n);
  assert.equal((await expect(guest, 'pong')).nonce, 4242n);

  // 6. A garbage token is refused with "token invalid" (4100).
  const intruder = await open(placed.edge.url);
  intruder.sendRaw(encode({ type: 'join', version: 1, token: 'garbage' }));
  const refused = await expect(intruder, 'closed');
  assert.equal(refused.code, 4100);

  // 7. The guest leaves: the host is told (reason 0), the guest is closed with 1000.
  guest.leave();
  const left = await expect(host, 'participant_left');
  assert.equal(left.participantId, joined.participant_id);
  assert.equal(left.reason, 0);
  const guestClosed = await expect(guest, 'closed');
  assert.equal(guestClosed.code, 1000);

  // 8. The host leaves too; the session ends.
  host.leave();
  assert.equal((await expect(host, 'closed')).code, 1000);
}

main().then(
  () => {
    clearTimeout(overall);
    console.log('node client: ok');
    process.exit(0);
  },
  (err) => {
    console.error(`node client: FAILED: ${err?.stack ?? describe(err)}`);
    process.exit(1);
  },
);
