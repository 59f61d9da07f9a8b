// WebRTC media through a real edge between two real Chromium pages: a host page publishes its
// fake camera and microphone, a guest page receives them. The Rust e2e harness
// (tests/e2e/media_browser.rs) starts the locator and the edge, creates the session and the
// guest's place through the locator, and runs this script:
//
//   cd tests/browser && npm ci && node media.mjs
//
// Signalling is the session protocol's (docs/protocol.md §2 "Media (version 3)"): Node holds each
// participant's session websocket (version 3, through tests/node/duet-client.mjs, the client
// written from the document alone) and carries SDP and candidates between it and the page's
// RTCPeerConnection, exactly as the document's "A browser client, in outline" says.
//
// Environment (all set by the harness):
//   DUET_LOCATOR_URL        http://127.0.0.1:PORT; the pages open its /livez (a secure context)
//   DUET_EDGE_URL           the session's `edge.url` (ws://...)
//   DUET_HOST_TOKEN, DUET_GUEST_TOKEN              the tokens of the create and join answers
//   DUET_HOST_ICE_SERVERS, DUET_GUEST_ICE_SERVERS  each answer's `ice_servers` (JSON)
//   DUET_EDGE_MEDIA_ADDR    the edge's media UDP address, ip:port
//   DUET_EDGE_METRICS_URL   the edge's Prometheus text (`<edge http base>/metrics`)
//   DUET_FORWARDED_METRIC   the forwarded-packet counter (default duet_edge_media_packets_sent_total)
//   DUET_MEDIA_MODE         `udp`, or `turn-tcp`: the guest page relays only (iceTransportPolicy
//                           'relay'), over TCP to the TURN server of its ice_servers, or `ice-tcp`:
//                           UDP candidates are dropped from every SDP and candidate the guest page
//                           exchanges with the edge, so its only path is the edge's passive ICE-TCP
//                           candidate (then DUET_EDGE_MEDIA_ADDR is the edge's ICE-TCP address)
//   DUET_OTHER_PUBLISHERS   how many other participants publish one audio track (default 0); each
//                           also receives the host's video, and says so with a session message
//                           `media received` to everyone, which the host waits for before it mutes
//                           and leaves media
//   CHROMIUM                default /usr/bin/chromium
//
// Checks, in order: both pages open media; the guest is told of the host's camera and microphone
// (participant 1); the guest decodes video frames and receives audio, and keeps receiving; its
// selected candidate pair ends at the edge's media address (in turn-tcp mode from a TCP relay
// candidate); the edge's forwarded-packet counter covers what the guest received; a host's
// track_mute reaches the guest as track_muted; the host closes its peer connection and leaves
// media: the guest gets track_unpublished for both tracks and the host media_closed (left).
//
// Every wait is for a condition, bounded; the whole run is bounded by OVERALL_TIMEOUT_MS. Prints
// "media test: ok" and exits 0 when everything passed, else prints the step that failed and
// exits 1.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import {
  connect,
  describeClose,
  MEDIA_CLOSE_REASON,
  MEDIA_PROTOCOL_VERSION,
  TRACK_SOURCE,
} from '../node/duet-client.mjs';

/** The whole run, browser start included; the harness gives the script 90 s. */
const OVERALL_TIMEOUT_MS = 80_000;
/** ICE, DTLS and the first decoded frames on loopback take a second or two; TURN a little more. */
const MEDIA_TIMEOUT_MS = 20_000;
/** One signalling round trip (a frame to the edge and its answer). */
const STEP_TIMEOUT_MS = 10_000;
const BROWSER_LAUNCH_TIMEOUT_MS = 30_000;
/** How often bounded waits look at their condition again. */
const POLL_MS = 100;
/** Video packets the guest must receive after the first check, to show that media keeps flowing. */
const MORE_PACKETS = 20;

let step = 'reading the environment';
let context = null;
let userDataDir = null;
const connections = [];

/** Prints why the run failed and exits 1, closing the browser first (briefly). */
async function fail(message) {
  console.error(`media test: FAILED during "${step}": ${message}`);
  for (const conn of connections) conn.terminate();
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}

function env(name, fallback) {
  const value = process.env[name] || fallback;
  if (value === undefined) {
    console.error(`media test: FAILED: ${name} is not set`);
    process.exit(1);
  }
  return value;
}

function jsonEnv(name) {
  try {
    return JSON.parse(env(name));
  } catch (e) {
    console.error(`media test: FAILED: ${name} is not JSON: ${e.message}`);
    process.exit(1);
  }
}

const LOCATOR = env('DUET_LOCATOR_URL').replace(/\/+$/, '');
const EDGE_URL = env('DUET_EDGE_URL');
const HOST_TOKEN = env('DUET_HOST_TOKEN');
const GUEST_TOKEN = env('DUET_GUEST_TOKEN');
const HOST_ICE_SERVERS = jsonEnv('DUET_HOST_ICE_SERVERS');
const GUEST_ICE_SERVERS = jsonEnv('DUET_GUEST_ICE_SERVERS');
const EDGE_MEDIA_ADDR = env('DUET_EDGE_MEDIA_ADDR');
const METRICS_URL = env('DUET_EDGE_METRICS_URL');
const FORWARDED_METRIC = env('DUET_FORWARDED_METRIC', 'duet_edge_media_packets_sent_total');
const MODE = env('DUET_MEDIA_MODE');
const OTHER_PUBLISHERS = Number(env('DUET_OTHER_PUBLISHERS', '0'));
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');

if (MODE !== 'udp' && MODE !== 'turn-tcp' && MODE !== 'ice-tcp') {
  console.error(`media test: FAILED: DUET_MEDIA_MODE is ${JSON.stringify(MODE)}, not udp, turn-tcp or ice-tcp`);
  process.exit(1);
}
const [EDGE_MEDIA_IP, EDGE_MEDIA_PORT] = (() => {
  const at = EDGE_MEDIA_ADDR.lastIndexOf(':');
  return [EDGE_MEDIA_ADDR.slice(0, at).replace(/^\[|\]$/g, ''), Number(EDGE_MEDIA_ADDR.slice(at + 1))];
})();

setTimeout(() => fail(`overall timeout of ${OVERALL_TIMEOUT_MS / 1000} s`), OVERALL_TIMEOUT_MS).unref();
process.on('unhandledRejection', (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));

/** Runs one step of the scenario; its name is what a failure reports. */
async function run(name, fn) {
  step = name;
  const started = Date.now();
  const result = await fn();
  console.log(`  ok: ${name} (${Date.now() - started} ms)`);
  return result;
}

/**
 * Polls `check` (which returns a truthy value when the condition holds) every POLL_MS until it
 * holds or `timeoutMs` passes; then throws with `what` and, if given, `detail()`.
 */
async function waitFor(what, check, { timeoutMs = STEP_TIMEOUT_MS, detail } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() >= deadline) {
      const more = detail ? `; ${await detail()}` : '';
      throw new Error(`${what}: not within ${timeoutMs / 1000} s${more}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

const show = (v) => JSON.stringify(v);

// ---------------------------------------------------------------------------------------------
// The page side: one RTCPeerConnection per page, driven from Node. Runs in the browser.

/**
 * Installs `window.duet` in the page. Every operation on the connection runs in one queue, so
 * that an edge offer and a local offer never interleave; `answerOffer` ignores an edge offer while
 * a local one is outstanding (§2 "Offers cross").
 */
function installPeer({ iceServers, relayOnly, tcpOnly }) {
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relayOnly ? 'relay' : 'all' });
  // ice-tcp mode: no UDP candidate crosses between this page and the edge, either way.
  const tcp = (sdp) => (tcpOnly ? sdp.replace(/^a=candidate:\S+ \d+ udp .*\r\n/gim, '') : sdp);
  const tracks = [];
  let chain = Promise.resolve();
  const serial = (fn) => {
    const result = chain.then(fn);
    chain = result.catch(() => {});
    return result;
  };
  pc.onicecandidate = (e) => {
    // null (or an empty candidate) ends the candidates: an empty `media_candidate`.
    if (tcpOnly && e.candidate && / udp /i.test(e.candidate.candidate)) return;
    window.duetCandidate(e.candidate ? e.candidate.candidate : '');
  };
  pc.ontrack = (e) => tracks.push({ mid: e.transceiver.mid, kind: e.track.kind });
  let stream = null;
  window.duet = {
    /** Adds the fake camera and microphone (the doc's "add tracks"). */
    publish: () =>
      serial(async () => {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
        for (const track of stream.getTracks()) pc.addTrack(track, stream);
        return stream.getTracks().map((t) => t.kind);
      }),
    /** One receive-only audio transceiver: an offer needs an m-line (§2 "One media connection"). */
    receiveOnly: () => serial(async () => void pc.addTransceiver('audio', { direction: 'recvonly' })),
    /** A local offer, set; with the mids and kinds of the sending transceivers. */
    offer: () =>
      serial(async () => {
        await pc.setLocalDescription(await pc.createOffer());
        const sending = pc
          .getTransceivers()
          .filter((t) => t.sender.track && (t.direction === 'sendonly' || t.direction === 'sendrecv'))
          .map((t) => ({ mid: t.mid, kind: t.sender.track.kind }));
        return { sdp: tcp(pc.localDescription.sdp), sending };
      }),
    applyAnswer: (sdp) => serial(() => pc.setRemoteDescription({ type: 'answer', sdp: tcp(sdp) })),
    /** The answer to an edge offer, or null when a local offer is outstanding (ignore it). */
    answerOffer: (sdp) =>
      serial(async () => {
        if (pc.signalingState === 'have-local-offer') return null;
        await pc.setRemoteDescription({ type: 'offer', sdp: tcp(sdp) });
        await pc.setLocalDescription(await pc.createAnswer());
        return tcp(pc.localDescription.sdp);
      }),
    /** A local mute of the video track (a muted browser track sends black frames). */
    muteVideo: () => {
      for (const t of stream.getVideoTracks()) t.enabled = false;
    },
    close: () => serial(async () => pc.close()),
    state: () => ({ connection: pc.connectionState, ice: pc.iceConnectionState, signaling: pc.signalingState, tracks }),
    /** What the checks need from getStats(). */
    stats: async () => {
      const report = await pc.getStats();
      const all = [...report.values()];
      const inbound = all
        .filter((s) => s.type === 'inbound-rtp')
        .map((s) => ({ kind: s.kind, mid: s.mid, packetsReceived: s.packetsReceived ?? 0, framesDecoded: s.framesDecoded ?? 0 }));
      const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = transport && report.get(transport.selectedCandidatePairId);
      const candidate = (id) => {
        const c = id && report.get(id);
        return c && {
          candidateType: c.candidateType,
          protocol: c.protocol,
          relayProtocol: c.relayProtocol,
          address: c.address ?? c.ip,
          port: c.port,
        };
      };
      const selected = pair && {
        state: pair.state,
        local: candidate(pair.localCandidateId),
        remote: candidate(pair.remoteCandidateId),
      };
      return { inbound, selected };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The Node side: a participant's session websocket, bridged to its page.

/** The first problem a participant's signalling met; checked by every wait. */
let signallingProblem = null;

class Participant {
  constructor(name, conn, page) {
    this.name = name;
    this.conn = conn;
    this.page = page;
    /** Every media frame from the edge, in order. */
    this.frames = [];
    /** Candidates gathered before our first `media_offer` went out (the edge wants the offer first: §2 "Refusals", 8). */
    this.pendingCandidates = [];
    this.offered = false;
    this.ignoredOffers = 0;
    /** Set once this participant leaves media or the session: its end is expected. */
    this.leaving = false;
    this.pump = this.#pump();
  }

  async #pump() {
    for await (const frame of this.conn) {
      try {
        await this.#handle(frame);
      } catch (e) {
        signallingProblem ??= `${this.name}: handling ${frame.type}: ${e.message}`;
      }
    }
    const { code, reason } = this.conn.closeInfo ?? {};
    if (!this.leaving) signallingProblem ??= `${this.name}: the session websocket closed: ${describeClose(code)} ${show(reason)}`;
  }

  async #handle(frame) {
    switch (frame.type) {
      case 'media_answer':
        this.frames.push({ type: frame.type });
        await this.page.evaluate((sdp) => window.duet.applyAnswer(sdp), frame.sdp);
        return;
      case 'media_offer': {
        this.frames.push({ type: frame.type, offer_id: frame.offer_id });
        const answer = await this.page.evaluate((sdp) => window.duet.answerOffer(sdp), frame.sdp);
        if (answer === null) this.ignoredOffers += 1;
        else this.conn.mediaAnswer(frame.offer_id, answer);
        return;
      }
      case 'error':
        // Media refusals keep the connection open, but none is expected here.
        signallingProblem ??= `${this.name}: the edge answered error ${frame.code}: ${frame.message}`;
        this.frames.push(frame);
        return;
      case 'media_closed':
        if (frame.reason !== MEDIA_CLOSE_REASON.left) signallingProblem ??= `${this.name}: media_closed with reason ${frame.reason}`;
        this.frames.push(frame);
        return;
      default:
        this.frames.push(frame);
    }
  }

  /** A candidate from the page (`media_candidate`), held back until our first offer is out. */
  candidate(candidate) {
    if (!this.offered) this.pendingCandidates.push(candidate);
    else if (!this.leaving) this.conn.mediaCandidate(candidate);
  }

  /**
   * Makes a local offer and sends it with a `track_publish` for each sending transceiver. §2 says
   * to send them before the offer that adds the transceiver, "or after"; the first offer sends
   * them after, because the edge refuses a `track_publish` that comes before the first
   * `media_offer` with `error` 8 ("no media connection") and forgets it (edge/src/media/engine.rs,
   * `Signal::Publish`).
   */
  async offer() {
    const { sdp, sending } = await this.page.evaluate(() => window.duet.offer());
    const publish = () => {
      for (const { mid, kind } of sending) this.conn.trackPublish(mid, kind === 'audio' ? TRACK_SOURCE.microphone : TRACK_SOURCE.camera);
    };
    if (this.offered) publish();
    this.conn.mediaOffer(sdp);
    if (!this.offered) publish();
    this.offered = true;
    for (const c of this.pendingCandidates.splice(0)) this.conn.mediaCandidate(c);
    return sending;
  }

  of(type) {
    return this.frames.filter((f) => f.type === type);
  }
}

/** Waits for `what`, failing early on a signalling problem. */
function waitMedia(what, check, options) {
  return waitFor(
    what,
    () => {
      if (signallingProblem) throw new Error(signallingProblem);
      return check();
    },
    options,
  );
}

/** The value of an unlabelled Prometheus counter in the edge's /metrics. */
async function scrapeCounter(name) {
  const res = await fetch(METRICS_URL, { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`GET ${METRICS_URL} answered ${res.status}`);
  const text = await res.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  if (!line) throw new Error(`no ${name} in ${METRICS_URL}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

const describePair = (p) =>
  p ? `${p.local?.candidateType}/${p.local?.protocol}${p.local?.relayProtocol ? `(relay over ${p.local.relayProtocol})` : ''} ${p.local?.address}:${p.local?.port} -> ${p.remote?.candidateType}/${p.remote?.protocol} ${p.remote?.address}:${p.remote?.port} (${p.state})` : 'none';

// ---------------------------------------------------------------------------------------------
// The scenario

async function main() {
  const { host, guest } = await run('join the session with protocol version 3, host and guest', async () => {
    const hostConn = await connect(EDGE_URL, HOST_TOKEN, { version: MEDIA_PROTOCOL_VERSION, timeoutMs: STEP_TIMEOUT_MS });
    connections.push(hostConn);
    const guestConn = await connect(EDGE_URL, GUEST_TOKEN, { version: MEDIA_PROTOCOL_VERSION, timeoutMs: STEP_TIMEOUT_MS });
    connections.push(guestConn);
    if (hostConn.participantId !== 1) throw new Error(`the host is participant ${hostConn.participantId}, not 1`);
    return { host: hostConn, guest: guestConn };
  });

  const [hostPage, guestPage] = await run('start Chromium with fake devices; open two pages on the locator', async () => {
    userDataDir = mkdtempSync(join(tmpdir(), 'duet-media-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: BROWSER_LAUNCH_TIMEOUT_MS,
      args: [
        '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream',
        '--allow-loopback-in-peer-connection',
        '--disable-features=WebRtcHideLocalIpsWithMdns',
        '--no-sandbox',
        '--disable-background-networking',
        '--headless',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    const pages = [];
    for (let i = 0; i < 2; i++) {
      const page = i === 0 && context.pages().length > 0 ? context.pages()[0] : await context.newPage();
      page.setDefaultTimeout(STEP_TIMEOUT_MS);
      page.on('pageerror', (e) => (signallingProblem ??= `page ${i}: script error: ${e.message}`));
      const res = await page.goto(`${LOCATOR}/livez`);
      if (res?.status() !== 200) throw new Error(`GET ${LOCATOR}/livez answered ${res?.status()}`);
      if (!(await page.evaluate(() => window.isSecureContext))) throw new Error(`${LOCATOR} is not a secure context`);
      pages.push(page);
    }
    return pages;
  });

  const publisher = new Participant('host', host, hostPage);
  const receiver = new Participant('guest', guest, guestPage);
  await hostPage.exposeFunction('duetCandidate', (c) => publisher.candidate(c));
  await guestPage.exposeFunction('duetCandidate', (c) => receiver.candidate(c));
  await hostPage.evaluate(installPeer, { iceServers: HOST_ICE_SERVERS, relayOnly: false });
  await guestPage.evaluate(installPeer, {
    iceServers: GUEST_ICE_SERVERS,
    relayOnly: MODE === 'turn-tcp',
    tcpOnly: MODE === 'ice-tcp',
  });

  const sending = await run('host: fake camera and microphone, track_publish, media_offer, media_answer', async () => {
    const kinds = await hostPage.evaluate(() => window.duet.publish());
    if (kinds.sort().join() !== 'audio,video') throw new Error(`getUserMedia gave ${show(kinds)}`);
    const sent = await publisher.offer();
    if (sent.map((s) => s.kind).sort().join() !== 'audio,video') throw new Error(`the offer sends ${show(sent)}`);
    await waitMedia('the edge answers the host', () => publisher.of('media_answer').length > 0);
    await waitMedia('the host page connects', async () => (await hostPage.evaluate(() => window.duet.state())).connection === 'connected', {
      timeoutMs: MEDIA_TIMEOUT_MS,
      detail: async () => show(await hostPage.evaluate(() => window.duet.state())),
    });
    return sent;
  });
  const videoMid = sending.find((s) => s.kind === 'video').mid;

  await run(`guest (${MODE === 'turn-tcp' ? 'relay only' : 'all candidates'}): a receive-only transceiver, media_offer, media_answer`, async () => {
    await guestPage.evaluate(() => window.duet.receiveOnly());
    await receiver.offer();
    await waitMedia('the edge answers the guest', () => receiver.of('media_answer').length > 0);
  });

  const hostTracks = await run('guest: track_published for the host (participant 1): camera and microphone', async () => {
    const fromHost = () => receiver.of('track_published').filter((f) => f.participant_id === host.participantId);
    await waitMedia('two tracks of the host announced', () => fromHost().length >= 2, { detail: () => show(receiver.frames) });
    const tracks = fromHost();
    const sources = tracks.map((f) => f.source).sort();
    if (show(sources) !== show([TRACK_SOURCE.microphone, TRACK_SOURCE.camera])) throw new Error(`sources ${show(sources)}: ${show(tracks)}`);
    if (tracks.some((t) => t.muted !== 0)) throw new Error(`a track is announced muted: ${show(tracks)}`);
    const others = receiver.of('track_published').filter((f) => f.participant_id !== host.participantId);
    if (others.some((f) => f.participant_id === guest.participantId)) throw new Error(`the guest is told of its own track: ${show(others)}`);
    return {
      camera: tracks.find((t) => t.source === TRACK_SOURCE.camera),
      microphone: tracks.find((t) => t.source === TRACK_SOURCE.microphone),
    };
  });

  const stats = () => guestPage.evaluate(() => window.duet.stats());
  const sum = (s, kind) => s.inbound.filter((i) => kind === undefined || i.kind === kind).reduce((n, i) => n + i.packetsReceived, 0);
  const decoded = (s) => s.inbound.filter((i) => i.kind === 'video').reduce((n, i) => n + i.framesDecoded, 0);

  const first = await run('guest: decodes the host\'s video and receives its audio', async () => {
    const s = await waitMedia('video frames decoded and audio packets received', async () => {
      const now = await stats();
      return decoded(now) > 0 && sum(now, 'audio') > 0 ? now : null;
    }, {
      timeoutMs: MEDIA_TIMEOUT_MS,
      detail: async () => `guest ${show(await guestPage.evaluate(() => window.duet.state()))} stats ${show(await stats())}`,
    });
    return s;
  });

  await run('guest: keeps receiving video', async () => {
    const before = sum(first, 'video');
    await waitMedia(`${MORE_PACKETS} more video packets`, async () => sum(await stats(), 'video') >= before + MORE_PACKETS, {
      timeoutMs: MEDIA_TIMEOUT_MS,
      detail: async () => show(await stats()),
    });
  });

  await run(`guest: the selected candidate pair ends at the edge's media address ${EDGE_MEDIA_ADDR}`, async () => {
    const { selected } = await stats();
    console.log(`  selected pair (guest, ${MODE}): ${describePair(selected)}`);
    if (!selected?.remote) throw new Error('no selected candidate pair');
    if (selected.remote.address !== EDGE_MEDIA_IP || selected.remote.port !== EDGE_MEDIA_PORT) {
      throw new Error(`the remote candidate is ${selected.remote.address}:${selected.remote.port}, not the edge's ${EDGE_MEDIA_ADDR}`);
    }
    if (MODE === 'turn-tcp' && (selected.local?.candidateType !== 'relay' || selected.local?.relayProtocol !== 'tcp')) {
      throw new Error(`the local candidate is ${show(selected.local)}, not a relay candidate over TCP`);
    }
    if (MODE === 'udp' && selected.local?.protocol !== 'udp') throw new Error(`the local candidate is ${show(selected.local)}, not UDP`);
    if (MODE === 'ice-tcp' && (selected.local?.protocol !== 'tcp' || selected.remote?.protocol !== 'tcp')) {
      throw new Error(`the pair is ${describePair(selected)}, not ICE-TCP`);
    }
    const hostPair = (await hostPage.evaluate(() => window.duet.stats())).selected;
    console.log(`  selected pair (host, ${MODE}): ${describePair(hostPair)}`);
  });

  await run(`the edge's ${FORWARDED_METRIC} covers every packet the guest received`, async () => {
    const s = await stats();
    const received = sum(s);
    const forwarded = await scrapeCounter(FORWARDED_METRIC);
    console.log(`  the guest received ${received} packets (${sum(s, 'audio')} audio, ${sum(s, 'video')} video); the edge forwarded ${forwarded}`);
    if (!(forwarded >= received)) throw new Error(`the edge forwarded ${forwarded} packets, the guest received ${received}`);
  });

  if (OTHER_PUBLISHERS > 0) {
    await run(`guest: told of the ${OTHER_PUBLISHERS} other publisher(s)' audio; they receive the host's video`, async () => {
      const others = () => receiver.of('track_published').filter((f) => f.participant_id !== host.participantId);
      await waitMedia('the other tracks announced', () => others().length >= OTHER_PUBLISHERS, { detail: () => show(receiver.frames) });
      if (others().some((f) => f.source !== TRACK_SOURCE.microphone)) throw new Error(`other tracks: ${show(others())}`);
      const said = () => publisher.of('message').filter((m) => m.payload.toString('utf8') === 'media received');
      await waitMedia(`"media received" from ${OTHER_PUBLISHERS} other participant(s)`, () => said().length >= OTHER_PUBLISHERS, {
        timeoutMs: MEDIA_TIMEOUT_MS,
      });
    });
  }

  await run('host: track_mute of its video; the guest gets track_muted', async () => {
    await hostPage.evaluate(() => window.duet.muteVideo());
    host.trackMute(videoMid, true);
    const id = hostTracks.camera.track_id;
    await waitMedia(`track_muted for track ${id}`, () => receiver.of('track_muted').some((f) => f.track_id === id && f.muted === 1), {
      detail: () => show(receiver.frames),
    });
  });

  await run('host: closes its peer connection and leaves media; the guest gets track_unpublished for both', async () => {
    await hostPage.evaluate(() => window.duet.close());
    publisher.leaving = true;
    host.mediaLeave();
    const ids = [hostTracks.camera.track_id, hostTracks.microphone.track_id];
    await waitMedia(`track_unpublished for tracks ${ids}`, () => ids.every((id) => receiver.of('track_unpublished').some((f) => f.track_id === id)), {
      detail: () => show(receiver.frames),
    });
    await waitMedia('media_closed (left) for the host', () => publisher.of('media_closed').some((f) => f.reason === MEDIA_CLOSE_REASON.left), {
      detail: () => show(publisher.frames),
    });
    if (receiver.of('media_closed').length > 0) throw new Error(`the guest's media closed: ${show(receiver.of('media_closed'))}`);
  });

  await run('leave the session; close the browser', async () => {
    receiver.leaving = true;
    for (const conn of connections) {
      conn.leave();
      await Promise.race([conn.closed, new Promise((r) => setTimeout(r, STEP_TIMEOUT_MS))]);
    }
    await context.close();
    context = null;
    rmSync(userDataDir, { recursive: true, force: true });
    userDataDir = null;
  });
  if (publisher.ignoredOffers + receiver.ignoredOffers > 0) {
    console.log(`  (edge offers ignored while a local offer was outstanding: host ${publisher.ignoredOffers}, guest ${receiver.ignoredOffers})`);
  }
  console.log('media test: ok');
  process.exit(0);
}

main().catch((e) => fail(e?.stack ?? String(e)));
