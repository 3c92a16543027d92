// The daemon's event hub and its server-sent-events stream (GET /events).
//
// The daemon never waits for a client: publish() is synchronous and only appends to per-subscriber
// queues. Each subscriber's bytes go to its socket while the socket accepts them (res.write() returns
// true); once Node's buffer is over its high-water mark we hold further events in the subscriber's
// own bounded queue and flush it on 'drain'. A subscriber whose queue fills up (it stopped reading)
// is dropped: its connection is destroyed and a `subscriber-dropped` event is published to the rest.
// Memory per subscriber is therefore bounded by the socket buffers + the high-water mark + maxQueue
// events, whatever the client does.
import type { ServerResponse } from 'node:http';
import { type Handler, type RequestContext, STREAMED, toJson } from './http-unix.js';
import { type Logger, silentLogger } from './log.js';

export interface DaemonEvent {
  /** Increasing from 1 for the life of the hub (the SSE id). */
  id: number;
  /** hotplug, decision, hold, assign, release, violation, ... */
  type: string;
  time: string;
  data: Record<string, unknown>;
}

export interface SubscribeOptions {
  /** Deliver only events this returns true for (types, an owner's own groups). */
  filter?: (event: DaemonEvent) => boolean;
  /** Replay retained events after this id (the SSE Last-Event-ID). */
  lastEventId?: number;
  /** Shown in logs and the drop event. */
  label?: string;
}

export interface HubOptions {
  /** Events a subscriber may have waiting beyond the socket's own buffering (default 1024). */
  maxQueue?: number;
  /** Recent events kept for Last-Event-ID replay (default 256). */
  retain?: number;
  /** Comment line sent to every subscriber this often, to find dead peers (default 15 s; 0 = off). */
  heartbeatMs?: number;
  logger?: Logger;
  clock?: () => Date;
}

/** One SSE frame. */
export const sseFrame = (event: DaemonEvent): string => `id: ${event.id}\nevent: ${event.type}\ndata: ${toJson(event.data)}\n\n`;

export class Subscriber {
  private readonly queue: string[] = [];
  private blocked = false;
  private closed = false;
  delivered = 0;

  constructor(
    readonly id: number,
    private readonly res: ServerResponse,
    private readonly hub: EventHub,
    readonly filter: ((event: DaemonEvent) => boolean) | null,
    readonly label: string,
  ) {
    res.on('drain', () => {
      this.blocked = false;
      this.flush();
    });
    res.on('close', () => this.hub.remove(this, 'closed'));
  }

  /** Events waiting in our own queue (not yet handed to the socket). */
  get queued(): number {
    return this.queue.length;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Queue a frame; false when the queue is full (the caller drops the subscriber). */
  offer(frame: string, maxQueue: number): boolean {
    if (this.closed) return true;
    if (this.blocked) {
      if (this.queue.length >= maxQueue) return false;
      this.queue.push(frame);
      return true;
    }
    this.write(frame);
    return true;
  }

  private write(frame: string): void {
    this.delivered += 1;
    // write() never blocks; false means "over the high-water mark, wait for drain".
    if (!this.res.write(frame)) this.blocked = true;
  }

  private flush(): void {
    while (!this.blocked && !this.closed && this.queue.length > 0) this.write(this.queue.shift()!);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
  }

  /** Cut the connection at once (a stalled reader would never take an orderly end). */
  destroy(): void {
    this.close();
    this.res.destroy();
  }

  /** Orderly end (daemon shutdown). */
  end(): void {
    this.close();
    this.res.end();
  }
}

export class EventHub {
  private readonly subs = new Set<Subscriber>();
  private readonly recent: DaemonEvent[] = [];
  private nextId = 1;
  private nextSub = 1;
  private heartbeat: NodeJS.Timeout | null = null;
  private readonly maxQueue: number;
  private readonly retain: number;
  private readonly logger: Logger;
  private readonly clock: () => Date;
  readonly stats = { published: 0, dropped: 0, subscribed: 0 };
  private readonly listeners = new Set<(event: DaemonEvent) => void>();

  constructor(options: HubOptions = {}) {
    this.maxQueue = options.maxQueue ?? 1024;
    this.retain = options.retain ?? 256;
    this.logger = options.logger ?? silentLogger;
    this.clock = options.clock ?? (() => new Date());
    const every = options.heartbeatMs ?? 15_000;
    if (every > 0) {
      this.heartbeat = setInterval(() => this.ping(), every);
      this.heartbeat.unref();
    }
  }

  get subscriberCount(): number {
    return this.subs.size;
  }

  /** The live subscribers (for status output and tests). */
  subscribers(): Subscriber[] {
    return [...this.subs];
  }

  /** In-process listeners (the daemon's own bookkeeping, bench probes); called synchronously. */
  onEvent(listener: (event: DaemonEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Record and fan out an event. Synchronous, never waits for any client. */
  publish(type: string, data: Record<string, unknown> = {}): DaemonEvent {
    const event: DaemonEvent = { id: this.nextId++, type, time: this.clock().toISOString(), data };
    this.stats.published += 1;
    this.recent.push(event);
    if (this.recent.length > this.retain) this.recent.shift();
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (error) {
        this.logger.warn('event listener failed', { error });
      }
    }
    let frame: string | null = null; // formatted once, and only when someone takes it
    const dropped: Subscriber[] = [];
    for (const sub of this.subs) {
      if (sub.filter && !sub.filter(event)) continue;
      frame ??= sseFrame(event);
      if (!sub.offer(frame, this.maxQueue)) dropped.push(sub);
    }
    for (const sub of dropped) this.drop(sub);
    return event;
  }

  private drop(sub: Subscriber): void {
    if (!this.subs.has(sub)) return;
    this.subs.delete(sub);
    this.stats.dropped += 1;
    sub.destroy();
    this.logger.warn('event subscriber dropped: queue full', { subscriber: sub.id, label: sub.label, maxQueue: this.maxQueue });
    this.publish('subscriber-dropped', { subscriber: sub.id, label: sub.label, reason: 'queue full' });
  }

  /** Called when a subscriber's connection closes. */
  remove(sub: Subscriber, reason: string): void {
    if (!this.subs.delete(sub)) return;
    sub.close();
    this.logger.debug('event subscriber left', { subscriber: sub.id, reason });
  }

  /** Attach an HTTP response as an SSE stream. */
  subscribe(res: ServerResponse, options: SubscribeOptions = {}): Subscriber {
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    res.flushHeaders();
    const sub = new Subscriber(this.nextSub++, res, this, options.filter ?? null, options.label ?? '');
    this.subs.add(sub);
    this.stats.subscribed += 1;
    res.write(`: isogroup events, subscriber ${sub.id}\n\n`);
    if (options.lastEventId !== undefined) {
      const oldest = this.recent[0]?.id ?? this.nextId;
      // Tell the client when events it asked for are no longer retained: it must resync by status.
      if (options.lastEventId + 1 < oldest) {
        sub.offer(sseFrame({ id: 0, type: 'reset', time: this.clock().toISOString(), data: { reason: 'events lost', oldest } }), this.maxQueue);
      }
      for (const e of this.recent) {
        if (e.id > options.lastEventId && (!sub.filter || sub.filter(e))) {
          if (!sub.offer(sseFrame(e), this.maxQueue)) {
            this.drop(sub);
            break;
          }
        }
      }
    }
    return sub;
  }

  private ping(): void {
    const dropped: Subscriber[] = [];
    for (const sub of this.subs) if (!sub.offer(': ping\n\n', this.maxQueue)) dropped.push(sub);
    for (const sub of dropped) this.drop(sub);
  }

  /**
   * The GET /events handler: `?types=a,b` filters by type, Last-Event-ID (header) or `?after=N`
   * replays retained events. `filterFor(ctx)` lets the daemon narrow an owner's view.
   */
  handler(filterFor?: (ctx: RequestContext) => ((event: DaemonEvent) => boolean) | null): Handler {
    return (ctx) => {
      const types = ctx.query.get('types');
      const wanted = types
        ? new Set(
            types
              .split(',')
              .map((t) => t.trim())
              .filter(Boolean),
          )
        : null;
      const own = filterFor?.(ctx) ?? null;
      const lastRaw = (ctx.req.headers['last-event-id'] as string | undefined) ?? ctx.query.get('after') ?? undefined;
      const last = lastRaw !== undefined && /^\d+$/.test(lastRaw) ? Number(lastRaw) : undefined;
      const filter = wanted || own ? (e: DaemonEvent) => (!wanted || wanted.has(e.type)) && (!own || own(e)) : undefined;
      const options: SubscribeOptions = { label: ctx.peer ? `pid ${ctx.peer.pid} uid ${ctx.peer.uid}` : 'unknown peer' };
      if (filter) options.filter = filter;
      if (last !== undefined) options.lastEventId = last;
      this.subscribe(ctx.res, options);
      return STREAMED;
    };
  }

  /** End every stream and stop the heartbeat (daemon shutdown). */
  close(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    for (const sub of this.subs) sub.end();
    this.subs.clear();
  }
}
