// Hosts and joins a duet session against a running locator, using only duet-client.mjs (which is
// written from docs/protocol.md alone), and checks what §2 promises along the way.
//
//   node host-and-join.mjs http://127.0.0.1:PORT
//
// Prints "node client: ok" and exits 0 on success; prints the failure and exits 1 otherwise,
// or after 20 s whatever is pending.
import { CLOSE, ConnectError, connect, createSession, joinSession, LEFT_REASON, ROLE } from './duet-client.mjs';

const OVERALL_TIMEOUT_MS = 20_000;
const STEP_TIMEOUT_MS = 5_000;
const MESSAGES = 20;

const locator = process.argv[2];
if (!locator || !/^https?:\/\//.test(locator)) {
  console.error('node client: FAILED: usage: node host-and-join.mjs http://LOCATOR_HOST:PORT');
  process.exit(1);
}

const sockets = [];
let step = 'starting';

function fail(message) {
  console.error(`node client: FAILED during "${step}": ${message}`);
  for (const conn of sockets) conn.terminate();
  process.exit(1);
}

// The script stops by itself whatever happens: an overall deadline, and exits on every path.
const deadline = setTimeout(() => fail(`overall timeout of ${OVERALL_TIMEOUT_MS / 1000} s`), OVERALL_TIMEOUT_MS);
process.on('unhandledRejection', (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const show = (v) => JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? `${x}n` : x?.type === 'Buffer' ? `<${x.data.length} bytes>` : x));

/** The next frame on `conn`, which must be of type `type`. */
async function expectFrame(conn, who, type) {
  const frame = await conn.next(STEP_TIMEOUT_MS).catch((e) => {
    throw new Error(`${who} waited for ${type}: ${e.message}`);
  });
  if (frame === null) throw new Error(`${who} waited for ${type}, but the connection closed: ${show(conn.closeInfo)}${conn.protocolError ? ` (${conn.protocolError.message})` : ''}`);
  check(frame.type === type, `${who} expected ${type}, got ${show(frame)}`);
  return frame;
}

/** Waits for the close of `conn` and returns `{ code, reason }`. */
async function expectClose(conn, who) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${who}'s connection did not close within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
  });
  try {
    return await Promise.race([conn.closed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function checkParticipant(p, { id, role, user_id, display_name }, what) {
  check(p !== undefined, `${what}: missing`);
  check(p.id === id, `${what}: id ${p.id}, expected ${id}`);
  check(p.role === role, `${what}: role ${p.role}, expected ${role}`);
  check(p.user_id === user_id, `${what}: user_id ${show(p.user_id)}, expected ${show(user_id)}`);
  check(p.display_name === display_name, `${what}: display_name ${show(p.display_name)}, expected ${show(display_name)}`);
}

async function main() {
  const hostUser = { id: 'node-host', name: 'Node Host' };
  const guestUser = { id: 'node-guest', name: 'Node Guest' };

  // §1: POST /api/v1/sessions -> 201 with session_id, participant_id, role, edge.url, token.
  step = 'create session';
  const hosted = await createSession(locator, { user: hostUser });
  check(hosted.role === 'host', `create answered role ${show(hosted.role)}`);
  check(hosted.participant_id === 1, `host participant_id ${hosted.participant_id}, §2 says the host is 1`);

  // §2: join, then welcome with our id and everyone connected (only us so far).
  step = 'host connects';
  const host = await connect(hosted.edge.url, hosted.token);
  sockets.push(host);
  const hostWelcome = host.welcome;
  check(hostWelcome.participant_id === hosted.participant_id, `host welcome participant_id ${hostWelcome.participant_id}, placement said ${hosted.participant_id}`);
  check(hostWelcome.participants.length === 1, `host welcome lists ${show(hostWelcome.participants)}, expected only the host`);
  const hostParticipant = { id: hosted.participant_id, role: ROLE.host, user_id: hostUser.id, display_name: hostUser.name };
  checkParticipant(hostWelcome.participants[0], hostParticipant, 'host in the host welcome');

  // §1: POST /api/v1/sessions/{id}/join -> 200, role guest, a new participant id, the same edge.
  step = 'guest joins via the locator';
  const joined = await joinSession(locator, hosted.session_id, { user: guestUser });
  check(joined.session_id === hosted.session_id, `join answered session ${joined.session_id}`);
  check(joined.role === 'guest', `join answered role ${show(joined.role)}`);
  check(joined.participant_id !== hosted.participant_id, `guest got the host's participant id ${joined.participant_id}`);
  check(joined.edge.id === hosted.edge.id, `guest placed on edge ${joined.edge.id}, host on ${hosted.edge.id}`);

  step = 'guest connects';
  const guest = await connect(joined.edge.url, joined.token);
  sockets.push(guest);
  const guestWelcome = guest.welcome;
  const guestParticipant = { id: joined.participant_id, role: ROLE.guest, user_id: guestUser.id, display_name: guestUser.name };
  check(guestWelcome.participant_id === joined.participant_id, `guest welcome participant_id ${guestWelcome.participant_id}, placement said ${joined.participant_id}`);
  check(guestWelcome.participants.length === 2, `guest welcome lists ${show(guestWelcome.participants)}, expected host and guest`);
  checkParticipant(guestWelcome.participants.find((p) => p.id === hostParticipant.id), hostParticipant, 'host in the guest welcome');
  checkParticipant(guestWelcome.participants.find((p) => p.id === guestParticipant.id), guestParticipant, 'guest in the guest welcome');
  // §2: welcome.seq is the latest number before our own join, and the host's own join was an
  // event after the host's welcome.seq.
  check(guestWelcome.seq > hostWelcome.seq, `guest welcome seq ${guestWelcome.seq} is not after the host's ${hostWelcome.seq}`);

  // §2: the host sees the guest's join as participant_joined, and "your join is the next event".
  step = 'host sees participant_joined';
  const joinedEvent = await expectFrame(host, 'host', 'participant_joined');
  checkParticipant(joinedEvent.participant, guestParticipant, 'participant_joined');
  check(joinedEvent.seq === guestWelcome.seq + 1n, `participant_joined seq ${joinedEvent.seq}, expected guest welcome seq + 1 = ${guestWelcome.seq + 1n}`);
  let lastSeq = joinedEvent.seq;

  // §2: send to everyone; the guest gets the messages in sequence order, the host an ack each.
  step = 'host sends 20 messages';
  for (let i = 1; i <= MESSAGES; i++) host.send(`message ${i}`, { to: 0, messageId: i });
  const seqOf = new Map();
  step = 'guest receives 20 messages';
  for (let i = 1; i <= MESSAGES; i++) {
    const m = await expectFrame(guest, 'guest', 'message');
    check(m.from === hostParticipant.id && m.to === 0, `message ${i}: from ${m.from} to ${m.to}, expected from ${hostParticipant.id} to 0`);
    check(m.payload.toString('utf8') === `message ${i}`, `message ${i}: payload ${show(m.payload.toString('utf8'))}`);
    check(m.seq > lastSeq, `message ${i}: seq ${m.seq} is not after ${lastSeq}`);
    lastSeq = m.seq;
    seqOf.set(BigInt(i), m.seq);
  }
  // §2 "Answers come in order": one ack per send, in the order of the sends, each carrying the
  // seq the guest saw for that message.
  step = 'host receives 20 acks';
  for (let i = 1; i <= MESSAGES; i++) {
    const ack = await expectFrame(host, 'host', 'ack');
    check(ack.message_id === BigInt(i), `ack ${i}: message_id ${ack.message_id}, expected ${i} (answers come in the order of the sends)`);
    check(ack.seq === seqOf.get(ack.message_id), `ack of message_id ${ack.message_id}: seq ${ack.seq}, the guest saw it as ${seqOf.get(ack.message_id)}`);
  }

  // §2: a direct message arrives with `to` equal to the recipient's own id.
  step = 'guest sends a direct message to the host';
  guest.send(Buffer.from([0x00, 0xff, 0x10]), { to: hostParticipant.id, messageId: 1 });
  const direct = await expectFrame(host, 'host', 'message');
  check(direct.from === guestParticipant.id, `direct message from ${direct.from}, expected ${guestParticipant.id}`);
  check(direct.to === host.participantId, `direct message to ${direct.to}, expected the host's own id ${host.participantId}`);
  check(direct.payload.equals(Buffer.from([0x00, 0xff, 0x10])), `direct payload ${direct.payload.toString('hex')}`);
  check(direct.seq > lastSeq, `direct message seq ${direct.seq} is not after ${lastSeq}`);
  lastSeq = direct.seq;
  const guestAck = await expectFrame(guest, 'guest', 'ack');
  check(guestAck.message_id === 1n && guestAck.seq === direct.seq, `guest ack ${show(guestAck)}, expected message_id 1 seq ${direct.seq}`);

  // §2: ping is answered by pong with the same nonce (one above 2^53 to exercise u64).
  step = 'ping';
  const nonce = 0xfedcba9876543210n;
  host.ping(nonce);
  const pong = await expectFrame(host, 'host', 'pong');
  check(pong.nonce === nonce, `pong nonce ${pong.nonce}, expected ${nonce}`);

  // §2 close codes: a garbage token on a new connection is closed with 4100 (token invalid).
  // Done while the session is still live, so 4200 (session ended) cannot be the answer instead.
  step = 'join with a garbage token';
  const garbage = await connect(hosted.edge.url, 'not-a-token', { timeoutMs: STEP_TIMEOUT_MS }).then(
    (conn) => {
      sockets.push(conn);
      throw new Error(`a garbage token was welcomed as participant ${conn.participantId}`);
    },
    (e) => e,
  );
  check(garbage instanceof ConnectError && garbage.closeInfo !== null, `garbage token: expected a close from the edge, got ${garbage?.stack ?? garbage}`);
  check(garbage.closeInfo.code === CLOSE.token_invalid, `garbage token closed with ${garbage.closeInfo.code} ${show(garbage.closeInfo.reason)}, expected ${CLOSE.token_invalid} (token invalid)`);

  // §2: leave -> the edge closes with 1000; the others see participant_left with reason 0.
  step = 'guest leaves';
  guest.leave();
  const guestClose = await expectClose(guest, 'guest');
  check(guestClose.code === 1000, `guest closed with ${guestClose.code} ${show(guestClose.reason)}, expected 1000 after leave`);
  const left = await expectFrame(host, 'host', 'participant_left');
  check(left.participant_id === guestParticipant.id, `participant_left for ${left.participant_id}, expected ${guestParticipant.id}`);
  check(left.reason === LEFT_REASON.left, `participant_left reason ${left.reason}, expected 0 (left)`);
  check(left.seq > lastSeq, `participant_left seq ${left.seq} is not after ${lastSeq}`);

  step = 'host leaves';
  host.leave();
  const hostClose = await expectClose(host, 'host');
  check(hostClose.code === 1000, `host closed with ${hostClose.code} ${show(hostClose.reason)}, expected 1000 after leave`);
}

main().then(
  () => {
    clearTimeout(deadline);
    console.log('node client: ok');
    process.exit(0);
  },
  (e) => fail(e?.stack ?? String(e)),
);
