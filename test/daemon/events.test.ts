import * as net from 'node:net';
import * as path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DaemonClient, SseParser } from '../../daemon/client.js';
import { EventHub, type HubOptions } from '../../daemon/events.js';
import { UnixHttpServer } from '../../daemon/http-unix.js';
import { resumeReading, stopReading } from '../../os/unix-rights.js';
import { tmpDir } from '../helpers/tmp.js';

const poll = <T>(fn: () => T) => expect.poll(fn, { timeout: 15_000 });

const start = async (options: HubOptions = {}) => {
  const hub = new EventHub({ heartbeatMs: 0, ...options });
  const server = new UnixHttpServer().route('GET', '/events', hub.handler());
  const sock = path.join(tmpDir(), 'd.sock');
  await server.listen(sock);
  onTestFinished(async () => {
    hub.close();
    await server.close();
  });
  return { hub, sock, client: new DaemonClient(sock) };
};

interface Received {
  id: number;
  event: string;
  json: Record<string, unknown>;
}

// Read the stream in the background into an array.
const consume = (client: DaemonClient, options: { types?: string[]; lastEventId?: number } = {}) => {
  const got: Received[] = [];
  const controller = new AbortController();
  const done = (async () => {
    for await (const e of client.events({ ...options, signal: controller.signal }))
      got.push({ id: Number(e.id), event: e.event, json: e.json as Record<string, unknown> });
  })().catch(() => undefined);
  onTestFinished(() => {
    controller.abort();
    return done;
  });
  return { got, stop: () => controller.abort(), done };
};

// A client that subscribes and then never reads again.
const stalledSubscriber = async (sock: string) => {
  const socket = net.connect(sock);
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write('GET /events HTTP/1.1\r\nhost: isogroup\r\n\r\n');
  stopReading(socket);
  let closed = false;
  socket.on('close', () => (closed = true));
  socket.on('error', () => undefined);
  onTestFinished(() => {
    socket.destroy();
  });
  return { socket, isClosed: () => closed };
};

describe('GET /events (server-sent events)', () => {
  it('delivers published events in order with ids, types and JSON data; ?types filters', async () => {
    const { hub, client } = await start();
    const all = consume(client);
    const violations = consume(client, { types: ['violation'] });
    await poll(() => hub.subscriberCount).toBe(2);
    hub.publish('hotplug', { bdf: '0000:0a:04.0', action: 'add' });
    hub.publish('violation', { bdf: '0000:0a:04.0', driver: 'e1000', group: '22' });
    hub.publish('hold', { group: '22', size: 1n << 40n });
    await poll(() => all.got.length).toBe(3);
    expect(all.got).toEqual([
      { id: 1, event: 'hotplug', json: { bdf: '0000:0a:04.0', action: 'add' } },
      { id: 2, event: 'violation', json: { bdf: '0000:0a:04.0', driver: 'e1000', group: '22' } },
      { id: 3, event: 'hold', json: { group: '22', size: '0x10000000000' } },
    ]);
    await poll(() => violations.got.map((e) => e.id)).toEqual([2]);
  });

  it('a stalled subscriber is dropped once its queue is full and does not hold back a fast one', async () => {
    const { hub, sock, client } = await start({ maxQueue: 32 });
    const stalled = await stalledSubscriber(sock);
    await poll(() => hub.subscriberCount).toBe(1);
    const fast = consume(client);
    await poll(() => hub.subscriberCount).toBe(2);
    const payload = 'x'.repeat(2000);
    let published = 0;
    // Publish in bursts smaller than the queue; the fast reader keeps up (it reads between bursts),
    // the stalled one fills the socket buffers and then its queue.
    while (hub.stats.dropped === 0 && published < 20_000) {
      for (let i = 0; i < 16; i += 1) hub.publish('hotplug', { n: (published += 1), payload });
      const last = hub.stats.published;
      await poll(() => fast.got.at(-1)?.id ?? 0).toBe(last);
    }
    expect(hub.stats.dropped).toBe(1);
    expect(hub.subscriberCount).toBe(1);
    // The stalled client, reading again, finds a prefix of the stream and then the end of it.
    let rawText = '';
    stalled.socket.on('data', (d: Buffer) => (rawText += d.toString('latin1')));
    resumeReading(stalled.socket);
    await poll(stalled.isClosed).toBe(true);
    const stalledIds = [...rawText.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    expect(stalledIds.length).toBeGreaterThan(0);
    expect(stalledIds.length).toBeLessThan(published);
    expect(stalledIds).toEqual(Array.from({ length: stalledIds.length }, (_, i) => i + 1));
    // Afterwards the fast subscriber still gets everything.
    for (let burst = 0; burst < 5; burst += 1) {
      for (let i = 0; i < 16; i += 1) hub.publish('hotplug', { n: (published += 1), payload });
      await poll(() => fast.got.at(-1)?.id).toBe(hub.stats.published);
    }
    expect(hub.stats.dropped).toBe(1);
    // Every event, in order, none missing: ids 1..N consecutive; the drop itself was announced.
    expect(fast.got.map((e) => e.id)).toEqual(Array.from({ length: hub.stats.published }, (_, i) => i + 1));
    expect(fast.got.filter((e) => e.event === 'hotplug').map((e) => e.json.n)).toEqual(Array.from({ length: published }, (_, i) => i + 1));
    expect(fast.got.filter((e) => e.event === 'subscriber-dropped')).toEqual([
      { id: expect.any(Number), event: 'subscriber-dropped', json: expect.objectContaining({ subscriber: 1, reason: 'queue full' }) },
    ]);
  });

  it('publish never waits: a tight loop of 20,000 events with a stalled reader returns, and queues stay bounded', async () => {
    const { hub, sock } = await start({ maxQueue: 64 });
    await stalledSubscriber(sock);
    await poll(() => hub.subscriberCount).toBe(1);
    const [sub] = hub.subscribers();
    let deepest = 0;
    for (let i = 0; i < 20_000; i += 1) {
      hub.publish('hotplug', { n: i, payload: 'y'.repeat(500) });
      deepest = Math.max(deepest, sub!.queued);
    }
    expect(hub.stats.published).toBe(20_001); // + the subscriber-dropped announcement
    expect(hub.stats.dropped).toBe(1);
    expect(deepest).toBeLessThanOrEqual(64);
    expect(sub!.isClosed).toBe(true);
    expect(hub.subscriberCount).toBe(0);
  });

  it('Last-Event-ID replays retained events, and says so when some are no longer retained', async () => {
    const { hub, client } = await start({ retain: 5 });
    for (let i = 1; i <= 8; i += 1) hub.publish('decision', { n: i });
    const resumed = consume(client, { lastEventId: 5 });
    await poll(() => resumed.got.map((e) => e.id)).toEqual([6, 7, 8]);
    const tooOld = consume(client, { lastEventId: 1 });
    await poll(() => tooOld.got.map((e) => `${e.event}:${e.id}`)).toEqual(['reset:0', 'decision:4', 'decision:5', 'decision:6', 'decision:7', 'decision:8']);
  });

  it('closing the hub ends every stream', async () => {
    const { hub, client } = await start();
    const s = consume(client);
    await poll(() => hub.subscriberCount).toBe(1);
    hub.publish('assign', { group: '7' });
    await poll(() => s.got.length).toBe(1);
    hub.close();
    await s.done;
    expect(s.got.map((e) => e.event)).toEqual(['assign']);
    expect(hub.subscriberCount).toBe(0);
  });
});

describe('SseParser', () => {
  it('parses frames split anywhere, multi-line data, comments and CRLF', () => {
    const text = ': hello\n\nid: 1\nevent: hold\ndata: {"a":\ndata: 1}\n\r\nid: 2\r\ndata: x\r\n\r\n';
    for (const size of [1, 3, 10, text.length]) {
      const p = new SseParser();
      const out = [];
      for (let i = 0; i < text.length; i += size) out.push(...p.push(text.slice(i, i + size)));
      expect(out, `chunk ${size}`).toEqual([
        { id: '1', event: 'hold', data: '{"a":\n1}' },
        { id: '2', event: 'message', data: 'x' },
      ]);
    }
  });
});
