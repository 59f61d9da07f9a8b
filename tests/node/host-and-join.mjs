// Hosts and joins duet sessions against a running locator, using only duet-client.mjs (which is
// written from docs/protocol.md alone), and checks what §2 promises along the way.
//
//   node host-and-join.mjs http://127.0.0.1:PORT [SCENARIO...]
//
// Runs every scenario (or the ones named), each in its own session, and reports each. Prints
// "node client: ok" and exits 0 when all pass; prints every failure and exits 1 otherwise, or
// after 45 s whatever is pending.
import WebSocket from 'ws';
import {
  canResume,
  CLOSE,
  ConnectError,
  connect,
  createSession,
  decodeEdgeFrame,
  describeClose,
  encode,
  ERROR_CODE,
  joinSession,
  LEFT_REASON,
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
      return new Error(`${what}: accepted (${show(conn.welcome ?? conn.resumed)}), expected a close with ${describeClose(code)}`);
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
  let waiting = false;
  const guestConnecting = connect(joined.edge.url, joined.token, {
    approvalTimeoutMs: STEP_TIMEOUT_MS,
    onWaiting: () => (waiting = true),
  });
  const request = await expectFrame(host, 'host', 'join_request');
  checkParticipant(request.participant, guestParticipant, 'join_request');
  check(waiting, 'the host got join_request before the guest got waiting');
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

const SCENARIOS = {
  'host-join-resume': hostJoinAndResume,
  'end-session': endSession,
  'host-approval': hostApproval,
  'max-participants': maxParticipants,
  // Not run by default: they fail against the edge as of this writing (see the report that came
  // with them); name them on the command line to run them.
  'approval-host-rejoins': approvalHostRejoins,
  'waiting-guest-host-frames': waitingGuestSendsHostFrames,
};
const DEFAULT_SCENARIOS = ['host-join-resume', 'end-session', 'host-approval', 'max-participants'];

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
