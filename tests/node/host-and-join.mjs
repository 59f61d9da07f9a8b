// Hosts and joins duet sessions, and follows a team's presence, against a running locator, using
// only duet-client.mjs (which is written from docs/protocol.md alone), and checks what §1, §2 and
// §2b promise along the way.
//
//   node host-and-join.mjs http://127.0.0.1:PORT [SCENARIO...]
//
// Runs every scenario (or the ones named), each in its own session, and reports each. Prints
// "node client: ok" and exits 0 when all pass; prints every failure and exits 1 otherwise, or
// after 45 s whatever is pending.
import { request as httpRequest } from 'node:http';
import WebSocket from 'ws';
import {
  canResume,
  CLOSE,
  ConnectError,
  connect,
  connectPresence,
  createSession,
  decodeEdgeFrame,
  decodePresenceEdgeFrame,
  describeClose,
  encode,
  encodePresence,
  ERROR_CODE,
  getPresence,
  joinSession,
  LEFT_REASON,
  PlacementError,
  resume,
  ROLE,
} from './duet-client.mjs';

const OVERALL_TIMEOUT_MS = 45_000;
const STEP_TIMEOUT_MS = 5_000;
const MESSAGES = 20;

const [locator, ...only] = process.argv.slice(2);
if (!locator || !/^https?:\/\//.test(locator)) {
  console.error('node client: FAILED: usage: node host-and-join.mjs http://LOCATOR_HOST:PORT [SCENARIO...]');
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

/** Checks that nothing arrives on `conn` for `ms`. */
async function expectNothing(conn, who, ms = 300) {
  const frame = await conn.next(ms).catch(() => undefined);
  check(frame === undefined, `${who} expected nothing, got ${frame === null ? `a close ${show(conn.closeInfo)}` : show(frame)}`);
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

/** `promise` (a connect() or resume()) must be refused by the edge with close code `code`. */
async function expectRefused(promise, code, what) {
  const outcome = await promise.then(
    (conn) => {
      sockets.push(conn);
      conn.terminate();
      return new Error(`${what}: accepted (${show(conn.welcome ?? conn.resumed ?? conn.first)}), expected a close with ${describeClose(code)}`);
    },
    (e) => e,
  );
  check(outcome instanceof ConnectError && outcome.closeInfo !== null, `${what}: expected a close from the edge, got ${outcome?.stack ?? outcome}`);
  check(
    outcome.closeInfo.code === code,
    `${what}: closed with ${describeClose(outcome.closeInfo.code)} ${show(outcome.closeInfo.reason)}, expected ${describeClose(code)}`,
  );
}

function checkParticipant(p, { id, role, user_id, display_name }, what) {
  check(p !== undefined, `${what}: missing`);
  check(p.id === id, `${what}: id ${p.id}, expected ${id}`);
  check(p.role === role, `${what}: role ${p.role}, expected ${role}`);
  check(p.user_id === user_id, `${what}: user_id ${show(p.user_id)}, expected ${show(user_id)}`);
  check(p.display_name === display_name, `${what}: display_name ${show(p.display_name)}, expected ${show(display_name)}`);
}

const hostUser = { id: 'node-host', name: 'Node Host' };
const guestUser = { id: 'node-guest', name: 'Node Guest' };

/** Creates a session and connects its host: `{ hosted, host, hostParticipant }`. */
async function hostSession(body = {}) {
  step = 'create session';
  const hosted = await createSession(locator, { user: hostUser, ...body });
  check(hosted.role === 'host', `create answered role ${show(hosted.role)}`);
  check(hosted.participant_id === 1, `host participant_id ${hosted.participant_id}, §2 says the host is 1`);
  step = 'host connects';
  const host = await connect(hosted.edge.url, hosted.token);
  sockets.push(host);
  const hostParticipant = { id: hosted.participant_id, role: ROLE.host, user_id: hostUser.id, display_name: hostUser.name };
  return { hosted, host, hostParticipant };
}

/** A guest joins `hosted`'s session through the locator: its placement answer. */
async function placeGuest(hosted, user) {
  step = `${user.name} joins via the locator`;
  const joined = await joinSession(locator, hosted.session_id, { user });
  check(joined.session_id === hosted.session_id, `join answered session ${joined.session_id}`);
  check(joined.role === 'guest', `join answered role ${show(joined.role)}`);
  check(joined.participant_id !== hosted.participant_id, `guest got the host's participant id ${joined.participant_id}`);
  check(joined.edge.id === hosted.edge.id, `guest placed on edge ${joined.edge.id}, host on ${hosted.edge.id}`);
  return joined;
}

const participantOf = (joined, user) => ({ id: joined.participant_id, role: ROLE.guest, user_id: user.id, display_name: user.name });

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/**
 * Host and guest exchange messages; the guest's socket drops, the host sends 3 messages, the
 * guest resumes and gets exactly those; wrong resumes are refused; then both leave.
 */
async function hostJoinAndResume() {
  const { hosted, host, hostParticipant } = await hostSession();
  // §2: join, then welcome with our id and everyone holding a place (only us so far), none away.
  const hostWelcome = host.welcome;
  check(hostWelcome.version === 2, `host welcome version ${hostWelcome.version}`);
  check(hostWelcome.participant_id === hosted.participant_id, `host welcome participant_id ${hostWelcome.participant_id}, placement said ${hosted.participant_id}`);
  check(hostWelcome.participants.length === 1, `host welcome lists ${show(hostWelcome.participants)}, expected only the host`);
  checkParticipant(hostWelcome.participants[0], hostParticipant, 'host in the host welcome');
  check(hostWelcome.away.length === 0, `host welcome lists ${show(hostWelcome.away)} away, expected nobody`);
  check(hostWelcome.resume_secret.length > 0, 'host welcome has an empty resume secret');

  const joined = await placeGuest(hosted, guestUser);
  step = 'guest connects';
  let guest = await connect(joined.edge.url, joined.token);
  sockets.push(guest);
  const guestWelcome = guest.welcome;
  const guestParticipant = participantOf(joined, guestUser);
  check(guestWelcome.participant_id === joined.participant_id, `guest welcome participant_id ${guestWelcome.participant_id}, placement said ${joined.participant_id}`);
  check(guestWelcome.participants.length === 2, `guest welcome lists ${show(guestWelcome.participants)}, expected host and guest`);
  checkParticipant(guestWelcome.participants.find((p) => p.id === hostParticipant.id), hostParticipant, 'host in the guest welcome');
  checkParticipant(guestWelcome.participants.find((p) => p.id === guestParticipant.id), guestParticipant, 'guest in the guest welcome');
  check(guestWelcome.away.length === 0, `guest welcome lists ${show(guestWelcome.away)} away, expected nobody`);
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
  check(host.unacked.length === 0, `host still has unacknowledged sends ${show(host.unacked)}`);

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

  // §2 "Sequence numbers": "A client keeps the highest seq it has received, from events and from
  // acks": the guest's is the seq of its own message, from the ack.
  check(guest.lastSeq === direct.seq, `guest lastSeq ${guest.lastSeq}, expected the ack's seq ${direct.seq}`);
  check(host.lastSeq === direct.seq, `host lastSeq ${host.lastSeq}, expected the direct message's seq ${direct.seq}`);

  // §2: ping is answered by pong with the same nonce (one above 2^53 to exercise u64).
  step = 'ping';
  const nonce = 0xfedcba9876543210n;
  host.ping(nonce);
  const pong = await expectFrame(host, 'host', 'pong');
  check(pong.nonce === nonce, `pong nonce ${pong.nonce}, expected ${nonce}`);

  // §2 close codes: a garbage token on a new connection is closed with 4100 (token invalid).
  // Done while the session is still live, so 4200 (session ended) cannot be the answer instead.
  step = 'join with a garbage token';
  await expectRefused(connect(hosted.edge.url, 'not-a-token', { timeoutMs: STEP_TIMEOUT_MS }), CLOSE.token_invalid, 'garbage token');

  // §2 "Resume" 1: the guest's connection drops without a close frame; the edge notices and the
  // host receives participant_away.
  step = 'guest drops';
  await expectNothing(guest, 'guest'); // everything the guest was sent is handed out
  const saved = guest.resumeState();
  check(saved.lastSeq === direct.seq && saved.highestMessageId === 1n && saved.unacked.length === 0, `guest resume state ${show(saved)}`);
  guest.terminate();
  const dropped = await expectClose(guest, 'guest');
  check(canResume(dropped.code), `the dropped guest closed with ${dropped.code}, which canResume() refuses`);
  step = 'host sees participant_away';
  const away = await expectFrame(host, 'host', 'participant_away');
  check(away.participant_id === guestParticipant.id, `participant_away for ${away.participant_id}, expected ${guestParticipant.id}`);
  check(away.seq > lastSeq, `participant_away seq ${away.seq} is not after ${lastSeq}`);

  // Meanwhile the host sends 3 messages: two to everyone, one to the away guest ("an away
  // participant counts, and gets the message when it resumes").
  step = 'host sends 3 messages while the guest is away';
  const missed = [
    { payload: 'missed 1', to: 0 },
    { payload: 'missed 2', to: 0 },
    { payload: 'missed 3 (direct)', to: guestParticipant.id },
  ];
  for (const m of missed) {
    m.messageId = host.nextMessageId();
    host.send(m.payload, { to: m.to, messageId: m.messageId });
  }
  for (const m of missed) {
    const ack = await expectFrame(host, 'host', 'ack');
    check(ack.message_id === m.messageId, `ack ${show(ack)}, expected message_id ${m.messageId}`);
    check(ack.seq > away.seq, `ack of ${m.messageId}: seq ${ack.seq} is not after participant_away's ${away.seq}`);
    m.seq = ack.seq;
  }
  check(missed[0].seq < missed[1].seq && missed[1].seq < missed[2].seq, `missed messages sequenced as ${missed.map((m) => m.seq)}`);

  // §2 "Resume": "A resume with a wrong secret, for a participant that holds no place ..., with a
  // last_seq above the session's latest ... is closed with 4106 resume refused".
  step = 'resume with a wrong secret';
  const wrongSecret = Buffer.from(saved.resumeSecret);
  wrongSecret[0] ^= 0xff;
  await expectRefused(resume(joined.edge.url, saved.participantId, wrongSecret, saved.lastSeq), CLOSE.resume_refused, 'resume with a wrong secret');
  step = 'resume with a secret of another length';
  await expectRefused(
    resume(joined.edge.url, saved.participantId, Buffer.concat([saved.resumeSecret, Buffer.from([0])]), saved.lastSeq),
    CLOSE.resume_refused,
    'resume with a longer secret',
  );
  step = 'resume for a participant that never joined';
  await expectRefused(resume(joined.edge.url, 99, saved.resumeSecret, saved.lastSeq), CLOSE.resume_refused, 'resume for participant 99');
  step = 'resume with a last_seq above the session\'s latest';
  await expectRefused(
    resume(joined.edge.url, saved.participantId, saved.resumeSecret, missed[2].seq + 1000n),
    CLOSE.resume_refused,
    'resume with a last_seq from the future',
  );
  // §2: "a `join` or `resume` with another version is closed with 4003".
  step = 'resume with version 1';
  const v1 = await firstFrameClose(joined.edge.url, {
    type: 'resume', version: 1, participant_id: saved.participantId, resume_secret: saved.resumeSecret, last_seq: saved.lastSeq,
  });
  check(v1.code === CLOSE.bad_version, `resume with version 1 closed with ${describeClose(v1.code)} ${show(v1.reason)}, expected 4003`);

  // §2 "Resume" 2-3: resume with the secret and last_seq; `resumed`, then exactly the events
  // numbered above last_seq that the guest would have received: the 3 messages (the guest gets
  // no event about itself, so not its own participant_away).
  step = 'guest resumes';
  guest = await resume(joined.edge.url, saved.participantId, saved.resumeSecret, saved.lastSeq, { highestMessageId: saved.highestMessageId });
  sockets.push(guest);
  const resumed = guest.resumed;
  check(resumed.replayed === missed.length, `resumed announces ${resumed.replayed} replayed events, expected ${missed.length} (the messages sent while away): ${show(resumed)}`);
  check(resumed.seq >= missed[2].seq, `resumed.seq ${resumed.seq} is below the last missed message's ${missed[2].seq}`);
  step = 'guest receives the replayed messages';
  for (const [i, m] of missed.entries()) {
    const got = await expectFrame(guest, 'guest', 'message');
    check(got.seq === m.seq, `replayed message ${i + 1}: seq ${got.seq}, the host's ack said ${m.seq}`);
    check(got.from === hostParticipant.id && got.to === m.to, `replayed message ${i + 1}: from ${got.from} to ${got.to}, expected from ${hostParticipant.id} to ${m.to}`);
    check(got.payload.toString('utf8') === m.payload, `replayed message ${i + 1}: payload ${show(got.payload.toString('utf8'))}`);
  }
  check(guest.replayPending === 0, `guest still expects ${guest.replayPending} replayed events`);
  check(guest.lastSeq === missed[2].seq, `guest lastSeq ${guest.lastSeq} after the replay, expected ${missed[2].seq}`);
  await expectNothing(guest, 'guest after the replay');

  step = 'host sees participant_back';
  const back = await expectFrame(host, 'host', 'participant_back');
  check(back.participant_id === guestParticipant.id, `participant_back for ${back.participant_id}, expected ${guestParticipant.id}`);
  check(back.seq > missed[2].seq, `participant_back seq ${back.seq} is not after the last missed message's ${missed[2].seq}`);
  check(resumed.seq <= back.seq, `resumed.seq ${resumed.seq} is above participant_back's ${back.seq}`);

  // Live traffic again, both ways; the guest's message ids go on increasing across connections.
  step = 'live traffic after the resume';
  const liveId = host.nextMessageId();
  host.send('after resume', { messageId: liveId });
  const live = await expectFrame(guest, 'guest', 'message');
  check(live.payload.toString('utf8') === 'after resume' && live.seq > back.seq, `live message ${show(live)}, expected seq above ${back.seq}`);
  const liveAck = await expectFrame(host, 'host', 'ack');
  check(liveAck.message_id === liveId && liveAck.seq === live.seq, `host ack ${show(liveAck)}, expected ${liveId} at ${live.seq}`);
  const guestId = guest.nextMessageId();
  check(guestId === 2n, `guest's next message id ${guestId}, expected 2`);
  guest.send('guest back', { messageId: guestId });
  const fromGuest = await expectFrame(host, 'host', 'message');
  check(fromGuest.from === guestParticipant.id && fromGuest.payload.toString('utf8') === 'guest back', `host got ${show(fromGuest)}`);
  const guestAck2 = await expectFrame(guest, 'guest', 'ack');
  check(guestAck2.message_id === guestId && guestAck2.seq === fromGuest.seq, `guest ack ${show(guestAck2)}, expected ${guestId} at ${fromGuest.seq}`);
  lastSeq = fromGuest.seq;

  // A second drop, during which another guest joins, says something and leaves: the replay holds
  // those participant_joined, message and participant_left events (§2 "Resume" 3: "they include
  // the participant_joined, participant_left and participant_away events you missed"), and the
  // newcomer's welcome lists the first guest as away.
  step = 'guest drops again';
  await expectNothing(guest, 'guest');
  const saved2 = guest.resumeState();
  check(saved2.lastSeq === fromGuest.seq && saved2.highestMessageId === guestId, `guest resume state ${show(saved2)}`);
  guest.terminate();
  await expectClose(guest, 'guest');
  const away2 = await expectFrame(host, 'host', 'participant_away');
  check(away2.participant_id === guestParticipant.id && away2.seq > lastSeq, `participant_away ${show(away2)}, expected for ${guestParticipant.id} after ${lastSeq}`);
  const otherUser = { id: 'node-guest-2', name: 'Node Guest 2' };
  const joined2 = await placeGuest(hosted, otherUser);
  step = 'another guest connects while the first is away';
  const other = await connect(joined2.edge.url, joined2.token);
  sockets.push(other);
  const otherParticipant = participantOf(joined2, otherUser);
  check(other.welcome.participants.length === 3, `the newcomer's welcome lists ${show(other.welcome.participants)}, expected 3 (the away guest holds its place)`);
  checkParticipant(other.welcome.participants.find((p) => p.id === guestParticipant.id), guestParticipant, 'away guest in the newcomer welcome');
  check(show(other.welcome.away) === show([guestParticipant.id]), `the newcomer's welcome lists ${show(other.welcome.away)} away, expected [${guestParticipant.id}]`);
  const otherJoined = await expectFrame(host, 'host', 'participant_joined');
  checkParticipant(otherJoined.participant, otherParticipant, 'participant_joined of the newcomer');
  other.send('hello from the newcomer', { messageId: other.nextMessageId() });
  const otherMessage = await expectFrame(host, 'host', 'message');
  await expectFrame(other, 'newcomer', 'ack');
  other.leave();
  await expectClose(other, 'newcomer');
  const otherLeft = await expectFrame(host, 'host', 'participant_left');
  check(otherLeft.participant_id === otherParticipant.id && otherLeft.reason === LEFT_REASON.left, `participant_left ${show(otherLeft)}`);

  step = 'guest resumes again';
  guest = await resume(joined.edge.url, saved2.participantId, saved2.resumeSecret, saved2.lastSeq, { highestMessageId: saved2.highestMessageId });
  sockets.push(guest);
  check(guest.resumed.replayed === 3, `resumed announces ${guest.resumed.replayed} replayed events, expected 3 (participant_joined, message, participant_left of the newcomer): ${show(guest.resumed)}`);
  const r1 = await expectFrame(guest, 'guest', 'participant_joined');
  checkParticipant(r1.participant, otherParticipant, 'replayed participant_joined');
  check(r1.seq === otherJoined.seq, `replayed participant_joined seq ${r1.seq}, the host saw ${otherJoined.seq}`);
  const r2 = await expectFrame(guest, 'guest', 'message');
  check(r2.seq === otherMessage.seq && r2.from === otherParticipant.id && r2.payload.toString('utf8') === 'hello from the newcomer', `replayed message ${show(r2)}, the host saw ${show(otherMessage)}`);
  const r3 = await expectFrame(guest, 'guest', 'participant_left');
  check(r3.seq === otherLeft.seq && r3.participant_id === otherParticipant.id && r3.reason === LEFT_REASON.left, `replayed participant_left ${show(r3)}, the host saw ${show(otherLeft)}`);
  check(guest.replayPending === 0 && guest.lastSeq === otherLeft.seq, `after the replay: replayPending ${guest.replayPending}, lastSeq ${guest.lastSeq}`);
  await expectNothing(guest, 'guest after the second replay');
  const back2 = await expectFrame(host, 'host', 'participant_back');
  check(back2.participant_id === guestParticipant.id && back2.seq > otherLeft.seq, `participant_back ${show(back2)}`);
  lastSeq = back2.seq;

  // §2: leave -> the edge closes with 1000; the others see participant_left with reason 0.
  step = 'guest leaves';
  guest.leave();
  const guestClose = await expectClose(guest, 'guest');
  check(guestClose.code === 1000, `guest closed with ${describeClose(guestClose.code)} ${show(guestClose.reason)}, expected 1000 after leave`);
  const left = await expectFrame(host, 'host', 'participant_left');
  check(left.participant_id === guestParticipant.id, `participant_left for ${left.participant_id}, expected ${guestParticipant.id}`);
  check(left.reason === LEFT_REASON.left, `participant_left reason ${left.reason}, expected 0 (left)`);
  check(left.seq > lastSeq, `participant_left seq ${left.seq} is not after ${lastSeq}`);

  // A participant that left holds no place: its resume is refused (§2 "Resume": 4106).
  step = 'resume after leave';
  await expectRefused(resume(joined.edge.url, saved.participantId, saved.resumeSecret, guest.lastSeq), CLOSE.resume_refused, 'resume after leave');

  step = 'host leaves';
  host.leave();
  const hostClose = await expectClose(host, 'host');
  check(hostClose.code === 1000, `host closed with ${describeClose(hostClose.code)} ${show(hostClose.reason)}, expected 1000 after leave`);
}

/**
 * Sends `frame` as the first frame of a new websocket to `edgeUrl` and resolves with the edge's
 * close `{ code, reason }`, or rejects with the first frame it answers with instead.
 */
function firstFrameClose(edgeUrl, frame) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(edgeUrl);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no close within ${STEP_TIMEOUT_MS} ms`));
    }, STEP_TIMEOUT_MS);
    ws.on('open', () => ws.send(encode(frame), { binary: true }));
    ws.on('message', (data) => {
      clearTimeout(timer);
      ws.terminate();
      reject(new Error(`the edge answered with a frame ${data.toString('hex')}`));
    });
    ws.on('error', () => {});
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString('utf8') });
    });
  });
}

/** `end_session` and `admit` are the host's; the host's `end_session` closes everyone with 4203. */
async function endSession() {
  const { hosted, host } = await hostSession();
  const joined = await placeGuest(hosted, guestUser);
  step = 'guest connects';
  const guest = await connect(joined.edge.url, joined.token);
  sockets.push(guest);
  await expectFrame(host, 'host', 'participant_joined');

  // §2: "From a guest it is refused with error 3"; admit from a guest too.
  step = 'guest sends end_session';
  guest.endSession();
  const e1 = await expectFrame(guest, 'guest', 'error');
  check(e1.code === ERROR_CODE.not_host, `guest end_session answered error ${show(e1)}, expected code 3`);
  step = 'guest sends admit';
  guest.admit(hosted.participant_id);
  const e2 = await expectFrame(guest, 'guest', 'error');
  check(e2.code === ERROR_CODE.not_host, `guest admit answered error ${show(e2)}, expected code 3`);
  // §2: "error 4 when the participant is not waiting".
  step = 'host admits a guest that is not waiting';
  host.admit(joined.participant_id);
  const e3 = await expectFrame(host, 'host', 'error');
  check(e3.code === ERROR_CODE.not_waiting, `host admit of a joined guest answered ${show(e3)}, expected code 4`);
  // The connections stay open after an error (§2: "error is not fatal").
  step = 'ping after the errors';
  guest.ping(7);
  check((await expectFrame(guest, 'guest', 'pong')).nonce === 7n, 'pong nonce');

  step = 'host sends end_session';
  host.endSession();
  const [hostClose, guestClose] = await Promise.all([expectClose(host, 'host'), expectClose(guest, 'guest')]);
  check(hostClose.code === CLOSE.ended_by_host, `host closed with ${describeClose(hostClose.code)}, expected 4203 after end_session (§2: "the host too")`);
  check(guestClose.code === CLOSE.ended_by_host, `guest closed with ${describeClose(guestClose.code)}, expected 4203 after end_session`);

  // §2: "Later connections to the session are closed with 4200".
  step = 'join after the end';
  await expectRefused(connect(joined.edge.url, joined.token, { timeoutMs: STEP_TIMEOUT_MS }), CLOSE.session_ended, 'join after end_session');
  step = 'resume after the end';
  const s = guest.resumeState();
  await expectRefused(resume(joined.edge.url, s.participantId, s.resumeSecret, s.lastSeq), CLOSE.session_ended, 'resume after end_session');
}

/** `options.require_approval`: waiting, join_request, admit and refuse (§2 "Host approval"). */
async function hostApproval() {
  const { hosted, host, hostParticipant } = await hostSession({ options: { require_approval: true } });
  const joined = await placeGuest(hosted, guestUser);
  const guestParticipant = participantOf(joined, guestUser);

  step = 'guest joins and waits';
  // The guest's `waiting` and the host's `join_request` travel on two sockets: either may be
  // read first here, so the test waits for both.
  let onWaiting;
  const waiting = new Promise((resolve) => (onWaiting = resolve));
  const guestConnecting = connect(joined.edge.url, joined.token, {
    approvalTimeoutMs: STEP_TIMEOUT_MS,
    onWaiting: () => onWaiting(),
  });
  const request = await expectFrame(host, 'host', 'join_request');
  checkParticipant(request.participant, guestParticipant, 'join_request');
  const giveUp = new Promise((resolve) => setTimeout(() => resolve(false), STEP_TIMEOUT_MS).unref());
  const waited = await Promise.race([waiting.then(() => true), giveUp]);
  check(waited, 'the guest got waiting');
  step = 'host admits the guest';
  host.admit(guestParticipant.id, true);
  const guest = await guestConnecting;
  sockets.push(guest);
  check(guest.welcome.participant_id === guestParticipant.id, `admitted guest welcome ${show(guest.welcome)}`);
  checkParticipant(guest.welcome.participants.find((p) => p.id === hostParticipant.id), hostParticipant, 'host in the admitted guest welcome');
  checkParticipant(guest.welcome.participants.find((p) => p.id === guestParticipant.id), guestParticipant, 'guest in its welcome');
  const joinedEvent = await expectFrame(host, 'host', 'participant_joined');
  checkParticipant(joinedEvent.participant, guestParticipant, 'participant_joined after admit');
  check(joinedEvent.seq === guest.welcome.seq + 1n, `participant_joined seq ${joinedEvent.seq}, expected the admitted guest's welcome seq + 1 = ${guest.welcome.seq + 1n}`);

  step = 'a second guest is refused';
  const user2 = { id: 'node-guest-2', name: 'Node Guest 2' };
  const joined2 = await placeGuest(hosted, user2);
  const refused = connect(joined2.edge.url, joined2.token, { approvalTimeoutMs: STEP_TIMEOUT_MS });
  const request2 = await expectFrame(host, 'host', 'join_request');
  checkParticipant(request2.participant, participantOf(joined2, user2), 'second join_request');
  host.admit(joined2.participant_id, false);
  await expectRefused(refused, CLOSE.not_admitted, 'refused guest');
  // The refused guest never held a place: nobody hears about it.
  await expectNothing(guest, 'admitted guest');
  await expectNothing(host, 'host');

  step = 'leave';
  guest.leave();
  await expectClose(guest, 'guest');
  const left = await expectFrame(host, 'host', 'participant_left');
  check(left.participant_id === guestParticipant.id && left.reason === LEFT_REASON.left, `participant_left ${show(left)}`);
  host.leave();
  await expectClose(host, 'host');
}

/** `options.max_participants`: one guest fits a session of 2, the next one is closed with 4205. */
async function maxParticipants() {
  const { hosted, host } = await hostSession({ options: { max_participants: 2 } });
  const joined = await placeGuest(hosted, guestUser);
  step = 'guest connects';
  const guest = await connect(joined.edge.url, joined.token);
  sockets.push(guest);
  await expectFrame(host, 'host', 'participant_joined');
  const user2 = { id: 'node-guest-2', name: 'Node Guest 2' };
  let joined2;
  try {
    joined2 = await placeGuest(hosted, user2);
  } catch (e) {
    throw new Error(`the locator refused the third participant (${e.message}); §2 says the edge closes it with 4205`);
  }
  step = 'third participant connects';
  await expectRefused(connect(joined2.edge.url, joined2.token, { timeoutMs: STEP_TIMEOUT_MS }), CLOSE.session_full, 'third participant of a 2-participant session');
  await expectNothing(host, 'host');
  step = 'end';
  host.endSession();
  await Promise.all([expectClose(host, 'host'), expectClose(guest, 'guest')]);
}

/**
 * A guest waiting for approval, on a raw websocket (connect() hides the time before `welcome`):
 * `{ send(frame), next() }`, `next()` resolving with the next decoded frame or `{ closed }`.
 */
async function rawWaitingGuest(joined) {
  const ws = new WebSocket(joined.edge.url);
  sockets.push({ terminate: () => ws.terminate() });
  const queue = [];
  const waiters = [];
  const push = (x) => (waiters.length > 0 ? waiters.shift()(x) : queue.push(x));
  ws.on('message', (data) => push(decodeEdgeFrame(data)));
  ws.on('close', (code) => push({ closed: code }));
  ws.on('error', () => {});
  await new Promise((resolve, reject) => {
    ws.on('open', resolve);
    ws.on('error', reject);
  });
  const guest = {
    send: (frame) => ws.send(encode(frame), { binary: true }),
    next: (ms = STEP_TIMEOUT_MS) =>
      queue.length > 0
        ? Promise.resolve(queue.shift())
        : new Promise((resolve) => {
            const waiter = (x) => {
              clearTimeout(timer);
              resolve(x);
            };
            const timer = setTimeout(() => {
              waiters.splice(waiters.indexOf(waiter), 1);
              resolve(undefined);
            }, ms);
            waiters.push(waiter);
          }),
  };
  guest.send({ type: 'join', token: joined.token });
  const first = await guest.next();
  check(first?.type === 'waiting', `a guest of a session with approval got ${show(first)}, expected waiting`);
  return guest;
}

/**
 * §2 "Host approval": "the host receives join_request ... (again for every waiting guest when the
 * host connects or resumes)": here the host connects again with its token while a guest waits.
 */
async function approvalHostRejoins() {
  const { hosted, host } = await hostSession({ options: { require_approval: true } });
  const joined = await placeGuest(hosted, guestUser);
  step = 'guest waits';
  await rawWaitingGuest(joined);
  const request = await expectFrame(host, 'host', 'join_request');
  checkParticipant(request.participant, participantOf(joined, guestUser), 'join_request');
  step = 'host connects again with its token';
  const host2 = await connect(hosted.edge.url, hosted.token);
  sockets.push(host2);
  const again = await expectFrame(host2, 'host (second connection)', 'join_request');
  checkParticipant(again.participant, participantOf(joined, guestUser), 'join_request repeated for the host\'s new connection');
  host2.endSession();
  await expectClose(host2, 'host');
}

/**
 * §2: `end_session` and `admit` from a guest are "refused with error 3"; a guest waiting for
 * approval is a guest (its sends get error 5, so errors reach it).
 */
async function waitingGuestSendsHostFrames() {
  const { hosted, host } = await hostSession({ options: { require_approval: true } });
  const joined = await placeGuest(hosted, guestUser);
  step = 'guest waits';
  const guest = await rawWaitingGuest(joined);
  await expectFrame(host, 'host', 'join_request');
  step = 'waiting guest sends a send';
  guest.send({ type: 'send', message_id: 1, to: 0, payload: 'early' });
  const e5 = await guest.next();
  check(e5?.type === 'error' && e5.code === ERROR_CODE.awaiting_approval, `a waiting guest's send was answered ${show(e5)}, expected error 5`);
  for (const frame of [{ type: 'end_session' }, { type: 'admit', participant_id: joined.participant_id, admit: 1 }]) {
    step = `waiting guest sends ${frame.type}`;
    guest.send(frame);
    const answer = await guest.next(1000);
    check(answer?.type === 'error' && answer.code === ERROR_CODE.not_host, `a waiting guest's ${frame.type} was answered ${answer === undefined ? 'with nothing within 1 s' : show(answer)}, expected error 3`);
  }
  host.endSession();
  await expectClose(host, 'host');
}

// ---------------------------------------------------------------------------------------------
// Presence (§1 `GET /api/v1/teams/{team}/presence`, §2b)
// ---------------------------------------------------------------------------------------------

/** Observations the document leaves open: printed, not failed on. */
function note(message) {
  console.log(`node client: note (${step}): ${message}`);
}

/** A name no earlier run on the same locator used. */
const unique = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;

/** Member records as a snapshot lists them (sorted by user_id, §2b). */
const members = (...list) =>
  list
    .map(([user, connections = 1]) => ({ user_id: user.id, display_name: user.name, connections }))
    .sort((a, b) => Buffer.compare(Buffer.from(a.user_id), Buffer.from(b.user_id)));

/** `snapshot` must list exactly `expectedMembers` and `expectedSessions`. */
function checkSnapshotIs(snapshot, expectedMembers, expectedSessions, what) {
  check(show(snapshot.members) === show(expectedMembers), `${what}: members ${show(snapshot.members)}, expected ${show(expectedMembers)}`);
  check(show(snapshot.sessions) === show(expectedSessions), `${what}: sessions ${show(snapshot.sessions)}, expected ${show(expectedSessions)}`);
}

/** The seq of the latest snapshot handed out on each presence connection. */
const seenSeq = new WeakMap();

/** The next frame on presence connection `conn` is a snapshot listing exactly these. */
async function expectSnapshot(conn, who, expectedMembers, expectedSessions) {
  const before = seenSeq.get(conn) ?? conn.first.seq;
  const snap = await expectFrame(conn, who, 'snapshot');
  seenSeq.set(conn, snap.seq);
  // PresenceConnection already closes on a seq that does not rise; this says it for the report.
  check(snap.seq > before, `${who}: snapshot seq ${snap.seq} is not above ${before}`);
  checkSnapshotIs(snap, expectedMembers, expectedSessions, `${who}'s snapshot ${snap.seq}`);
  return snap;
}

/** Reads the snapshots that arrive on `conn` until nothing comes for `quietMs`, and returns them. */
async function drainSnapshots(conn, who, quietMs = 300) {
  const got = [];
  for (;;) {
    const frame = await conn.next(quietMs).catch(() => undefined);
    if (frame === undefined) return got;
    check(frame?.type === 'snapshot', `${who} expected a snapshot or nothing, got ${frame === null ? `a close ${show(conn.closeInfo)}` : show(frame)}`);
    seenSeq.set(conn, frame.seq);
    got.push(frame);
  }
}

/** Asks for `user`'s presence in `team` and checks the answer against `sameAs` (an earlier one). */
async function askPresence(team, user, sameAs) {
  step = `${user.name ?? 'anonymous'} asks for ${show(team)}'s presence`;
  const answer = await getPresence(locator, team, user.id === undefined ? {} : { user: user.id, name: user.name });
  check(Date.parse(answer.expires_at) > Date.now(), `presence token expires_at ${answer.expires_at} is not in the future`);
  if (sameAs) {
    // §1: "Every team's presence is served by one edge at a time".
    check(answer.edge.id === sameAs.edge.id && answer.edge.url === sameAs.edge.url, `${user.name}'s presence is on ${show(answer.edge)}, the team's was on ${show(sameAs.edge)}`);
  }
  return answer;
}

/** Connects to a presence URL and keeps the connection for the cleanup. */
async function presenceConnect(answer, who) {
  step = `${who} connects to presence`;
  const conn = await connectPresence(answer.edge.url, answer.token, { timeoutMs: STEP_TIMEOUT_MS });
  sockets.push(conn);
  return conn;
}

/**
 * A raw presence websocket: sends `first` (a presence frame, raw bytes, or a string sent as a text
 * message), then `then` once the first frame from the edge arrives, and resolves with what came
 * back: `{ frames, close }`.
 */
function rawPresence(url, first, then) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const got = [];
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no close within ${STEP_TIMEOUT_MS} ms; got ${show(got)}`));
    }, STEP_TIMEOUT_MS);
    ws.on('open', () => {
      if (typeof first === 'string') ws.send(first);
      else ws.send(Buffer.isBuffer(first) ? first : encodePresence(first), { binary: true });
    });
    ws.on('message', (data) => {
      got.push(decodePresenceEdgeFrame(data));
      if (got.length === 1 && then) ws.send(encodePresence(then), { binary: true });
    });
    ws.on('error', () => {});
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ frames: got, close: { code, reason: reason.toString('utf8') } });
    });
  });
}

/**
 * Two users of one team follow its presence on the same edge; a session of the team appears
 * while its host is connected and goes when the host leaves; a user that closes disappears;
 * tokens of the wrong kind or team, another version and a second hello are refused.
 */
async function teamPresence() {
  const id = unique();
  const team = `node team ${id}`;
  // Names with a space, '+' and '&': the query values must arrive as they are.
  const ada = { id: 'node-ada', name: 'Ada L.' };
  const bo = { id: 'node-bo', name: 'Bo+Co & sons' };

  const pa = await askPresence(team, ada);
  const pb = await askPresence(team, bo, pa);

  const a = await presenceConnect(pa, 'ada');
  // §2b: "After hello the edge sends a snapshot"; "Your own user is in the snapshot while you are
  // connected"; a new team has no live session.
  checkSnapshotIs(a.first, members([ada]), [], "ada's first snapshot");

  const b = await presenceConnect(pb, 'bo');
  checkSnapshotIs(b.first, members([ada], [bo]), [], "bo's first snapshot");
  check(b.first.seq > a.first.seq, `bo's first snapshot seq ${b.first.seq} is not above ada's ${a.first.seq} (§2b: "seq rises with every snapshot of this team on this edge")`);
  step = 'ada sees bo arrive';
  await expectSnapshot(a, 'ada', members([ada], [bo]), []);
  // bo's own arrival is a change too; whether bo also gets a snapshot for it after the one that
  // answered its hello, the document does not say.
  for (const extra of await drainSnapshots(b, 'bo')) {
    checkSnapshotIs(extra, members([ada], [bo]), [], "bo's second snapshot");
    note(`bo got a second snapshot (seq ${extra.seq}) after the one answering its hello (seq ${b.first.seq})`);
  }

  // §2b: ping is answered by pong with the same nonce.
  step = 'presence ping';
  const nonce = 0xfedcba9876543210n;
  a.ping(nonce);
  const pong = await expectFrame(a, 'ada', 'pong');
  check(pong.nonce === nonce, `presence pong nonce ${pong.nonce}, expected ${nonce}`);

  // A second connection of ada (§2b: "how many presence connections it has open, for instance two
  // IDE windows"). It is not "a member's first connection", so the others need not hear of it.
  const pa2 = await askPresence(team, ada, pa);
  const a2 = await presenceConnect(pa2, 'ada (second window)');
  checkSnapshotIs(a2.first, members([ada, 2], [bo]), [], "ada's second connection's first snapshot");
  for (const [conn, who] of [[a, 'ada'], [b, 'bo']]) {
    for (const got of await drainSnapshots(conn, who)) {
      checkSnapshotIs(got, members([ada, 2], [bo]), [], `${who}'s snapshot after ada's second connection`);
      note(`${who} got a snapshot (seq ${got.seq}) for ada's second connection, which is not "a member's first connection"`);
    }
  }
  step = "ada's second connection closes";
  a2.close();
  await expectClose(a2, 'ada (second window)');
  for (const [conn, who] of [[a, 'ada'], [b, 'bo']]) {
    for (const got of await drainSnapshots(conn, who)) {
      checkSnapshotIs(got, members([ada], [bo]), [], `${who}'s snapshot after ada's second connection closed`);
      note(`${who} got a snapshot (seq ${got.seq}) when ada's second connection closed, which is not "its last one closing"`);
    }
  }

  // A session of the team: listed once "starting", that is once its host is on the edge.
  step = 'create a session of the team';
  const hosted = await createSession(locator, { user: hostUser, team });
  for (const early of await drainSnapshots(a, 'ada')) {
    note(`ada got a snapshot after the session was created, before its host connected: ${show(early)}`);
  }
  step = 'the host connects';
  const host = await connect(hosted.edge.url, hosted.token);
  sockets.push(host);
  step = 'the session shows up';
  const withSession = await expectSnapshot(a, 'ada', members([ada], [bo]), [hosted.session_id]);
  await expectSnapshot(b, 'bo', members([ada], [bo]), [hosted.session_id]);

  // §2b: "a session token is refused with 4102" (here, a session of this very team).
  step = 'presence hello with a session token';
  await expectRefused(connectPresence(pa.edge.url, hosted.token, { timeoutMs: STEP_TIMEOUT_MS }), CLOSE.token_other_session, 'presence hello with a session token');
  // The other way round (§ Tokens: "no session token passes for a presence token or the other
  // way round"): the presence token's session `presence:<team>` is not the one in the URL, 4102.
  step = 'session join with a presence token';
  await expectRefused(connect(hosted.edge.url, pa.token, { timeoutMs: STEP_TIMEOUT_MS }), CLOSE.token_other_session, 'session join with a presence token');
  // §2b: "it must be for this team (else 4102)".
  step = "presence hello with another team's token";
  const otherTeam = await getPresence(locator, `node other team ${id}`, { user: ada.id, name: ada.name });
  if (otherTeam.edge.id === pa.edge.id) {
    await expectRefused(connectPresence(pa.edge.url, otherTeam.token, { timeoutMs: STEP_TIMEOUT_MS }), CLOSE.token_other_session, "presence hello with another team's token");
  } else {
    note(`the other team is on ${otherTeam.edge.id}, not ${pa.edge.id}: its token would be refused for the edge (4103) first`);
  }
  // §2b: "a version other than 1 with 4003"; "a second hello, closes with 4005".
  step = 'presence hello with version 2';
  await expectRefused(connectPresence(pa.edge.url, pa.token, { timeoutMs: STEP_TIMEOUT_MS, version: 2 }), CLOSE.bad_version, 'presence hello with version 2');
  step = 'a second hello';
  const twice = await rawPresence(pa.edge.url, { type: 'hello', version: 1, token: pa.token }, { type: 'hello', version: 1, token: pa.token });
  check(twice.frames.length === 1 && twice.frames[0].type === 'snapshot', `a hello, then a second one: the edge sent ${show(twice.frames)}, expected one snapshot`);
  check(twice.close.code === CLOSE.unexpected_frame, `a second hello closed with ${describeClose(twice.close.code)} ${show(twice.close.reason)}, expected 4005`);
  step = 'a ping before hello';
  const pingFirst = await rawPresence(pa.edge.url, { type: 'ping', nonce: 1n });
  check(pingFirst.frames.length === 0 && pingFirst.close.code === CLOSE.unexpected_frame, `a ping before hello: ${show(pingFirst)}, expected a close with 4005`);
  // §2b: text frames (4006), unknown kinds (4001) and malformed frames (4000) "exactly as in §2";
  // "the largest message a client may send is 16 KiB", and §2: "A websocket message over the
  // limit is closed with 4002".
  const refusedFirst = async (what, first, code) => {
    step = what;
    const got = await rawPresence(pa.edge.url, first);
    check(got.frames.length === 0 && got.close.code === code, `${what}: ${show(got.frames)}, closed with ${describeClose(got.close.code)} ${show(got.close.reason)}, expected ${describeClose(code)}`);
  };
  await refusedFirst('a text message first', 'hello', CLOSE.text_frame);
  await refusedFirst('a session join on the presence websocket', encode({ type: 'join', token: pa.token }), CLOSE.unknown_kind);
  const hello = encodePresence({ type: 'hello', version: 1, token: pa.token });
  await refusedFirst('a truncated hello', hello.subarray(0, hello.length - 1), CLOSE.malformed);
  await refusedFirst('a hello with a trailing byte', Buffer.concat([hello, Buffer.from([0])]), CLOSE.malformed);
  // kind + version + length + token: 16,380 bytes of token make exactly 16 KiB, one more is over.
  await refusedFirst('a hello of exactly 16 KiB with a garbage token', { type: 'hello', version: 1, token: 'x'.repeat(16380) }, CLOSE.token_invalid);
  await refusedFirst('a hello of 16 KiB + 1', { type: 'hello', version: 1, token: 'x'.repeat(16381) }, CLOSE.too_large);

  // The raw connections were one more connection of ada each: let their snapshots (if any) pass;
  // the last one lists ada once again.
  for (const [conn, who] of [[a, 'ada'], [b, 'bo']]) {
    const got = await drainSnapshots(conn, who);
    for (const snap of got) {
      check(snap.sessions.length === 1 && snap.members.length === 2, `${who}'s snapshot around the raw connections: ${show(snap)}`);
    }
    if (got.length > 0) checkSnapshotIs(got.at(-1), members([ada], [bo]), [hosted.session_id], `${who}'s last snapshot after the raw connections`);
  }

  // §2b: the team's live sessions come "newest first".
  step = 'a second session of the team';
  const hosted2 = await createSession(locator, { user: { id: 'node-host-2', name: 'Node Host 2' }, team });
  const host2 = await connect(hosted2.edge.url, hosted2.token);
  sockets.push(host2);
  await expectSnapshot(a, 'ada', members([ada], [bo]), [hosted2.session_id, hosted.session_id]);
  await expectSnapshot(b, 'bo', members([ada], [bo]), [hosted2.session_id, hosted.session_id]);
  step = 'the second session ends';
  host2.endSession();
  await expectClose(host2, 'second host');
  await expectSnapshot(a, 'ada', members([ada], [bo]), [hosted.session_id]);
  await expectSnapshot(b, 'bo', members([ada], [bo]), [hosted.session_id]);

  // §2: the last participant's leave ends the session ("at once when nobody else holds a place").
  step = 'the host leaves';
  host.leave();
  const hostClose = await expectClose(host, 'host');
  check(hostClose.code === CLOSE.normal, `host closed with ${describeClose(hostClose.code)}, expected 1000 after leave`);
  step = 'the session goes';
  await expectSnapshot(a, 'ada', members([ada], [bo]), []);
  await expectSnapshot(b, 'bo', members([ada], [bo]), []);
  check(withSession.sessions[0] === hosted.session_id, 'the listed session id is the one created');

  // §2b: "a member's ... last one closing" is a change: the others see a snapshot without it.
  step = 'bo closes';
  b.close();
  await expectClose(b, 'bo');
  step = 'ada sees bo go';
  await expectSnapshot(a, 'ada', members([ada]), []);
  await expectNothing(a, 'ada');
  a.close();
  await expectClose(a, 'ada');
}

/**
 * Team names and users as §1 allows them: a team with `/`, spaces, `+`, `%` and non-ASCII,
 * percent-encoded in the path, served and matched with its sessions; a user left out of the
 * query is made up by the locator; unknown query parameters and invalid values are refused.
 */
async function presenceNames() {
  const id = unique();
  const team = `node/team é+%20 ${id}`;
  const cy = { id: 'node-cy é', name: 'Cy ✓' };
  const pc = await askPresence(team, cy);
  const c = await presenceConnect(pc, 'cy');
  checkSnapshotIs(c.first, members([cy]), [], "cy's first snapshot");
  // "sorted by user_id": U+FF61 before U+1F600 in UTF-8 (and code point) order, the other way
  // round in UTF-16 order; PresenceConnection closes with 4000 on any other order.
  const emoji = { id: 'node-\u{1f600}', name: 'Smiley' };
  const halfwidth = { id: 'node-\uff61', name: 'Halfwidth' };
  const e1 = await presenceConnect(await askPresence(team, emoji, pc), 'smiley');
  const e2 = await presenceConnect(await askPresence(team, halfwidth, pc), 'halfwidth');
  checkSnapshotIs(e2.first, members([cy], [emoji], [halfwidth]), [], "halfwidth's first snapshot");
  check(e2.first.members[1].user_id === halfwidth.id, `user ids are not in UTF-8 byte order: ${show(e2.first.members.map((m) => m.user_id))}`);
  for (const [conn, who] of [[e1, 'smiley'], [e2, 'halfwidth']]) {
    conn.close();
    await expectClose(conn, who);
  }
  await drainSnapshots(c, 'cy');
  check(show(c.latest.members) === show(members([cy])), `cy's latest snapshot lists ${show(c.latest.members)} after the others left`);
  step = 'a session of the oddly named team';
  const hosted = await createSession(locator, { user: hostUser, team });
  const host = await connect(hosted.edge.url, hosted.token);
  sockets.push(host);
  await expectSnapshot(c, 'cy', members([cy]), [hosted.session_id]);
  host.endSession();
  await expectClose(host, 'host');
  await expectSnapshot(c, 'cy', members([cy]), []);
  c.close();
  await expectClose(c, 'cy');

  // §1: "without user the locator makes up anon-<random> and, without name, Guest <first four
  // characters>".
  const anonTeam = `node anon ${id}`;
  const pAnon = await askPresence(anonTeam, {});
  const anon = await presenceConnect(pAnon, 'anonymous');
  check(anon.first.members.length === 1, `anonymous's first snapshot lists ${show(anon.first.members)}, expected only itself`);
  const [me] = anon.first.members;
  const random = /^anon-(.+)$/.exec(me.user_id)?.[1];
  check(random !== undefined, `anonymous user id ${show(me.user_id)} is not anon-<random>`);
  check(me.display_name === `Guest ${[...random].slice(0, 4).join('')}`, `anonymous display name ${show(me.display_name)}, expected "Guest " and the first four characters of ${show(random)}`);
  anon.close();
  await expectClose(anon, 'anonymous');
  // A user id without a name: the document does not say what the four characters are then.
  step = 'a user without a name';
  const pNoName = await getPresence(locator, anonTeam, { user: 'node-dee' });
  const noName = await presenceConnect(pNoName, 'dee');
  note(`a presence user "node-dee" without a name is listed as ${show(noName.first.members)}`);
  noName.close();
  await expectClose(noName, 'dee');

  // §1: "Any other parameter is a 400 bad_request", and team, user and name are checked.
  const refused = async (what, run) => {
    step = what;
    const outcome = await run().then((ok) => ok, (e) => e);
    check(outcome instanceof PlacementError && outcome.status === 400 && outcome.code === 'bad_request', `${what}: ${outcome instanceof Error ? outcome.message : `answered ${show(outcome)}`}, expected 400 bad_request`);
  };
  const raw = async (path, method = 'GET') => {
    const res = await fetch(`${locator.replace(/\/+$/, '')}${path}`, { method });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new PlacementError(res.status, body?.error?.code ?? 'unknown', body?.error?.message ?? '');
    return body;
  };
  await refused('an unknown query parameter', () => raw(`/api/v1/teams/${encodeURIComponent(anonTeam)}/presence?user=node-x&region=eu`));
  await refused('an empty name', () => getPresence(locator, anonTeam, { user: 'node-x', name: '' }));
  await refused('a team of 129 bytes', () => getPresence(locator, 't'.repeat(129)));
  await refused('a team with a control character', () => getPresence(locator, 'tab\there'));
  await refused('an empty user', () => getPresence(locator, anonTeam, { user: '' }));
  await refused('a user of 257 bytes', () => getPresence(locator, anonTeam, { user: 'u'.repeat(257) }));
  await refused('a name of 257 bytes', () => getPresence(locator, anonTeam, { user: 'node-x', name: 'é'.repeat(128) + 'x' }));
  step = 'POST to the presence route';
  const post = await raw(`/api/v1/teams/${encodeURIComponent(anonTeam)}/presence`, 'POST').then((ok) => ok, (e) => e);
  check(post instanceof PlacementError && post.status === 405 && post.code === 'method_not_allowed', `POST to the presence route: ${post instanceof Error ? post.message : show(post)}, expected 405 method_not_allowed`);
  step = 'the longest team, user and name';
  await getPresence(locator, `${id}-${'t'.repeat(128 - id.length - 1)}`, { user: 'u'.repeat(256), name: 'é'.repeat(128) });
}

/**
 * Raw requests §1 allows, which fail as of this writing (see the report that came with them):
 * a team that is not UTF-8 must get the JSON error shape of §1 ("Every error has the same shape
 * and a stable code"); the team `..` ("1-128 bytes of UTF-8 without control characters,
 * percent-encoded in the path") must be served at an `edge.url` one can "connect to as is".
 */
async function presenceRawTeams() {
  const origin = new URL(locator);
  const rawGet = (path) =>
    new Promise((resolve, reject) => {
      // node:http sends the path as given: fetch would resolve a %2E%2E segment away.
      const req = httpRequest({ host: origin.hostname, port: origin.port, path, method: 'GET' }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body }));
      });
      req.on('error', reject);
      req.end();
    });
  // Both checks run; their failures are reported together.
  const problems = [];
  for (const [what, run] of [
    ['a team that is not UTF-8', async () => {
      const bad = await rawGet('/api/v1/teams/%FF/presence');
      let json = null;
      try {
        json = JSON.parse(bad.body);
      } catch {}
      check(bad.status === 400 && json?.error?.code === 'bad_request', `GET /api/v1/teams/%FF/presence answered ${bad.status} ${bad.type} ${show(bad.body)}, expected 400 {"error":{"code":"bad_request",...}}`);
    }],
    ['the team ..', async () => {
      const dots = await rawGet('/api/v1/teams/%2E%2E/presence?user=node-dots');
      check(dots.status === 200, `GET /api/v1/teams/%2E%2E/presence answered ${dots.status} ${show(dots.body)}`);
      const answer = JSON.parse(dots.body);
      check(answer.team === '..', `the answer's team is ${show(answer.team)}`);
      const conn = await connectPresence(answer.edge.url, answer.token, { timeoutMs: STEP_TIMEOUT_MS }).catch((e) => {
        throw new Error(`the team ..'s edge.url ${show(answer.edge.url)} (path ${show(new URL(answer.edge.url).pathname)} once parsed as a URL): ${e.message}`);
      });
      sockets.push(conn);
      check(conn.first.members.some((m) => m.user_id === 'node-dots'), `the team ..'s snapshot ${show(conn.first)}`);
      conn.close();
    }],
  ]) {
    step = what;
    await run().catch((e) => problems.push(`${what}: ${e.message}`));
  }
  check(problems.length === 0, problems.join('\n'));
}

const SCENARIOS = {
  'host-join-resume': hostJoinAndResume,
  'end-session': endSession,
  'host-approval': hostApproval,
  'max-participants': maxParticipants,
  presence: teamPresence,
  'presence-names': presenceNames,
  // Not run by default: they fail against the edge or the locator as of this writing (see the
  // reports that came with them); name them on the command line to run them.
  'approval-host-rejoins': approvalHostRejoins,
  'waiting-guest-host-frames': waitingGuestSendsHostFrames,
  'presence-raw-teams': presenceRawTeams,
};
const DEFAULT_SCENARIOS = ['host-join-resume', 'end-session', 'host-approval', 'max-participants', 'presence', 'presence-names'];

async function main() {
  const names = only.length > 0 ? only : DEFAULT_SCENARIOS;
  const failures = [];
  for (const name of names) {
    const scenario = SCENARIOS[name];
    if (!scenario) throw new Error(`unknown scenario ${name}; known: ${Object.keys(SCENARIOS).join(', ')}`);
    step = 'starting';
    try {
      await scenario();
      console.log(`node client: ${name}: ok`);
    } catch (e) {
      failures.push(`${name}, during "${step}": ${e?.stack ?? e}`);
      console.error(`node client: ${name}: FAILED during "${step}": ${e?.message ?? e}`);
    }
    for (const conn of sockets.splice(0)) conn.terminate();
  }
  if (failures.length > 0) throw new Error(`${failures.length} of ${names.length} scenarios failed:\n${failures.join('\n')}`);
}

main().then(
  () => {
    clearTimeout(deadline);
    console.log('node client: ok');
    process.exit(0);
  },
  (e) => {
    step = 'the end';
    fail(e?.message ?? String(e));
  },
);
