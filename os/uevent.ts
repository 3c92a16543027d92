// Hotplug hints for the guard daemon. Events are HINTS: the daemon rescans, diffs and decides; a hint
// never carries authority (a uevent can be dropped, a watch event coalesced, a device gone by the
// time anyone looks). Sources behind one interface:
// - NetlinkUeventSource: the kernel's own uevents (NETLINK_KOBJECT_UEVENT, group 1) through koffi;
//   a non-blocking socket drained on a timer, so the event loop never blocks in recv.
// - UdevadmSource: `udevadm monitor --kernel --property --subsystem-match=pci` streamed through execa,
//   where netlink is unavailable (no koffi, a sandbox without AF_NETLINK).
// - the fixture kernel's watch on a fixture root (sim/watch.ts) implements the same interface.
// - IntervalSource: a periodic "rescan" hint, the backstop for whatever the others miss.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { IsogroupError, isIsogroupError } from '../errors.js';
import { type Bdf, isBdf } from '../model/bdf.js';
import { C, setsockoptInt, sysBind, sysClose, sysRecvFrom, sysSocket } from './libc.js';

/** One kernel uevent, as lib/kobject_uevent.c sends it. */
export interface Uevent {
  action: string;
  devpath: string;
  subsystem: string;
  /** PCI_SLOT_NAME (or the devpath's last component when that is a BDF). */
  bdf?: Bdf;
  /** DRIVER= (bind/unbind events and devices with a driver). */
  driver?: string;
  seqnum: number | null;
  props: Record<string, string>;
}

export type HintSourceName = 'netlink' | 'udevadm' | 'fixture' | 'interval' | 'manual';

export interface HotplugHint {
  source: HintSourceName;
  /** add, remove, bind, unbind, change, move, ...; `rescan` when the source may have missed events. */
  action: string;
  bdf?: Bdf;
  driver?: string;
  devpath?: string;
  seqnum?: number;
  uevent?: Uevent;
  /** Why a `rescan` hint was sent (overflow, source restarted, error text). */
  reason?: string;
  /** The fixture path that changed (fixture source). */
  path?: string;
}

export interface HotplugSource {
  readonly name: HintSourceName;
  /** Begin delivering hints. Call once. */
  start(onHint: (hint: HotplugHint) => void): void;
  /** Stop and release everything; idempotent. */
  close(): Promise<void>;
}

const bdfOf = (props: Record<string, string>, devpath: string): Bdf | undefined => {
  const slot = props.PCI_SLOT_NAME?.toLowerCase();
  if (slot && isBdf(slot)) return slot;
  const last = devpath.split('/').pop()?.toLowerCase();
  return last && isBdf(last) ? last : undefined;
};

const fromProps = (props: Record<string, string>, fallback: { action?: string; devpath?: string } = {}): Uevent | null => {
  const action = props.ACTION ?? fallback.action;
  const devpath = props.DEVPATH ?? fallback.devpath;
  if (!action || !devpath) return null;
  const seq = props.SEQNUM !== undefined && /^\d+$/.test(props.SEQNUM) ? Number(props.SEQNUM) : null;
  const event: Uevent = { action, devpath, subsystem: props.SUBSYSTEM ?? '', seqnum: seq, props };
  const bdf = bdfOf(props, devpath);
  if (bdf) event.bdf = bdf;
  if (props.DRIVER) event.driver = props.DRIVER;
  return event;
};

/**
 * Parse one kernel uevent datagram: "ACTION@DEVPATH\0KEY=VALUE\0...". Returns null for messages that
 * are not kernel uevents (udev's "libudev" re-broadcasts, garbage) or whose header disagrees with
 * ACTION/DEVPATH.
 */
export const parseUevent = (buf: Buffer): Uevent | null => {
  const fields = buf.toString('utf8').split('\0');
  const header = fields[0] ?? '';
  const at = header.indexOf('@');
  if (at <= 0 || header.startsWith('libudev')) return null;
  const props: Record<string, string> = {};
  for (const f of fields.slice(1)) {
    const eq = f.indexOf('=');
    if (eq > 0) props[f.slice(0, eq)] = f.slice(eq + 1);
  }
  const headerAction = header.slice(0, at);
  const headerPath = header.slice(at + 1);
  if ((props.ACTION && props.ACTION !== headerAction) || (props.DEVPATH && props.DEVPATH !== headerPath)) return null;
  return fromProps(props, { action: headerAction, devpath: headerPath });
};

const hintOf = (source: HintSourceName, e: Uevent): HotplugHint => {
  const hint: HotplugHint = { source, action: e.action, devpath: e.devpath, uevent: e };
  if (e.bdf) hint.bdf = e.bdf;
  if (e.driver) hint.driver = e.driver;
  if (e.seqnum !== null) hint.seqnum = e.seqnum;
  return hint;
};

export interface NetlinkOptions {
  /** Only uevents of this subsystem become hints (default 'pci'; null for all). */
  subsystem?: string | null;
  /**
   * Longest gap between two drains of the socket when idle (default 20 ms). After a drain that found
   * messages the next one runs 1 ms later, doubling back up to this while nothing arrives: bursts
   * (a hot-added card sends add, then bind) are read within about a millisecond, an idle host costs
   * 50 cheap non-blocking recv calls a second.
   */
  pollMs?: number;
  /** Kernel receive buffer to ask for (default 4 MiB; SO_RCVBUFFORCE when root). */
  receiveBuffer?: number;
  /** Tests only: also accept messages a process (not the kernel, port id 0) sent to the group. */
  acceptUserSenders?: boolean;
}

const MAX_UEVENT = 8192; // UEVENT_BUFFER_SIZE in include/linux/kobject.h is 2048; leave room
const SOCKADDR_NL = 12;

/**
 * Kernel uevents from a NETLINK_KOBJECT_UEVENT socket. `NetlinkUeventSource.open()` creates and binds
 * the socket at once (so a caller can fall back when that fails); start() begins draining it.
 */
export class NetlinkUeventSource implements HotplugSource {
  readonly name = 'netlink' as const;
  private timer: NodeJS.Timeout | null = null;
  private fd: number | null;
  private readonly buf = Buffer.alloc(MAX_UEVENT);
  /** Messages received and accepted / dropped (not from the kernel, unparsable, other subsystem). */
  readonly counts = { polls: 0, received: 0, hinted: 0, ignored: 0, overflows: 0 };

  private constructor(
    fd: number,
    private readonly options: NetlinkOptions,
  ) {
    this.fd = fd;
  }

  static open(options: NetlinkOptions = {}): NetlinkUeventSource {
    const fd = sysSocket(C.AF_NETLINK, C.SOCK_DGRAM | C.SOCK_NONBLOCK, C.NETLINK_KOBJECT_UEVENT, {
      code: 'E_UNSUPPORTED',
      what: 'opening the kernel uevent socket',
    });
    try {
      const size = options.receiveBuffer ?? 4 << 20;
      try {
        setsockoptInt(fd, C.SOL_SOCKET, C.SO_RCVBUFFORCE, size);
      } catch {
        setsockoptInt(fd, C.SOL_SOCKET, C.SO_RCVBUF, size); // unprivileged: capped by net.core.rmem_max
      }
      const addr = Buffer.alloc(SOCKADDR_NL); // struct sockaddr_nl { u16 family; u16 pad; u32 pid; u32 groups; }
      addr.writeUInt16LE(C.AF_NETLINK, 0);
      addr.writeUInt32LE(0, 4); // pid 0: the kernel assigns our port id
      addr.writeUInt32LE(1, 8); // multicast group 1: kernel uevents (udev's re-broadcast is group 2)
      sysBind(fd, addr, { code: 'E_UNSUPPORTED', what: 'binding the kernel uevent socket' });
    } catch (error) {
      sysClose(fd);
      throw error;
    }
    return new NetlinkUeventSource(fd, options);
  }

  start(onHint: (hint: HotplugHint) => void): void {
    if (this.fd === null) throw new IsogroupError('E_INTERNAL', 'netlink uevent source already closed', {});
    if (this.timer) throw new IsogroupError('E_INTERNAL', 'netlink uevent source already started', {});
    const idle = Math.max(1, this.options.pollMs ?? 20);
    let delay = 1;
    const tick = (): void => {
      if (this.fd === null) return;
      delay = this.drain(onHint) > 0 ? 1 : Math.min(idle, delay * 2);
      this.timer = setTimeout(tick, delay);
      this.timer.unref();
    };
    this.timer = setTimeout(tick, delay);
    this.timer.unref();
  }

  /** Read everything queued right now (at most 1,000 messages per call, to keep the loop responsive). */
  drain(onHint: (hint: HotplugHint) => void): number {
    const subsystem = this.options.subsystem === undefined ? 'pci' : this.options.subsystem;
    let n = 0;
    this.counts.polls += 1;
    while (this.fd !== null && n < 1000) {
      let got: ReturnType<typeof sysRecvFrom>;
      try {
        got = sysRecvFrom(this.fd, this.buf, C.MSG_DONTWAIT, SOCKADDR_NL);
      } catch (error) {
        // ENOBUFS: the kernel dropped uevents because we were slow. Say so; the daemon rescans.
        const errno = isIsogroupError(error) ? String(error.details.errno) : undefined;
        if (errno === 'ENOBUFS') this.counts.overflows += 1;
        onHint({ source: 'netlink', action: 'rescan', reason: errno === 'ENOBUFS' ? 'uevent overflow (ENOBUFS)' : `recv failed: ${(error as Error).message}` });
        if (errno === 'ENOBUFS') continue;
        return n;
      }
      if (got === null) break;
      n += 1;
      this.counts.received += 1;
      // Only the kernel (port id 0) sends kernel uevents; anything else is ignored.
      const senderPid = got.addr.length >= 8 ? got.addr.readUInt32LE(4) : -1;
      const event = senderPid === 0 || this.options.acceptUserSenders ? parseUevent(this.buf.subarray(0, got.bytes)) : null;
      if (!event || (subsystem !== null && event.subsystem !== subsystem)) {
        this.counts.ignored += 1;
        continue;
      }
      this.counts.hinted += 1;
      onHint(hintOf('netlink', event));
    }
    return n;
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.fd !== null) sysClose(this.fd);
    this.fd = null;
  }
}

/**
 * Incremental parser for `udevadm monitor --kernel --property` output: a "KERNEL[ts] action devpath
 * (subsystem)" line, then KEY=VALUE lines, then a blank line.
 */
export class UdevadmMonitorParser {
  private pending = '';
  private header: { action: string; devpath: string; subsystem: string } | null = null;
  private props: Record<string, string> = {};

  /** Feed a chunk of output; returns the events completed by it. */
  push(chunk: string): Uevent[] {
    this.pending += chunk;
    const out: Uevent[] = [];
    let nl: number;
    while ((nl = this.pending.indexOf('\n')) >= 0) {
      const line = this.pending.slice(0, nl).replace(/\r$/, '');
      this.pending = this.pending.slice(nl + 1);
      const e = this.line(line);
      if (e) out.push(e);
    }
    return out;
  }

  /** End of stream: flush an event not followed by a blank line. */
  end(): Uevent[] {
    const rest = this.pending.length ? this.push('\n') : [];
    const e = this.line('');
    return e ? [...rest, e] : rest;
  }

  private line(line: string): Uevent | null {
    const head = /^KERNEL\[[\d.]+\]\s+(\S+)\s+(\S+)\s+\(([^)]*)\)\s*$/.exec(line);
    if (head) {
      const flushed = this.flush();
      this.header = { action: head[1]!, devpath: head[2]!, subsystem: head[3]! };
      return flushed;
    }
    if (line.trim() === '') return this.flush();
    const eq = line.indexOf('=');
    if (this.header && eq > 0) this.props[line.slice(0, eq)] = line.slice(eq + 1);
    return null;
  }

  private flush(): Uevent | null {
    if (!this.header) return null;
    const { action, devpath, subsystem } = this.header;
    const props = { ...this.props };
    if (!props.SUBSYSTEM) props.SUBSYSTEM = subsystem;
    this.header = null;
    this.props = {};
    return fromProps(props, { action, devpath });
  }
}

export interface UdevadmOptions {
  /** Command and arguments (default udevadm monitor --kernel --property --subsystem-match=pci). */
  command?: string[];
  /** First restart delay after the monitor exits unexpectedly (default 1000 ms; doubles up to 60 s while it keeps failing). */
  restartMs?: number;
}

export const UDEVADM_MONITOR = ['udevadm', 'monitor', '--kernel', '--property', '--subsystem-match=pci'];

/** Kernel uevents through `udevadm monitor`, for hosts where the netlink socket cannot be used. */
export class UdevadmSource implements HotplugSource {
  readonly name = 'udevadm' as const;
  private child: ResultPromise | null = null;
  private closed = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private readonly controller = new AbortController();
  private failures = 0;

  constructor(private readonly options: UdevadmOptions = {}) {}

  start(onHint: (hint: HotplugHint) => void): void {
    if (this.closed) throw new IsogroupError('E_INTERNAL', 'udevadm source already closed', {});
    const [file, ...args] = this.options.command ?? UDEVADM_MONITOR;
    const parser = new UdevadmMonitorParser();
    const child = execa(file!, args, { buffer: false, stdin: 'ignore', stderr: 'ignore', cancelSignal: this.controller.signal, forceKillAfterDelay: 2000 });
    this.child = child;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      for (const e of parser.push(chunk)) {
        this.failures = 0; // it works: the next restart is quick again
        onHint(hintOf('udevadm', e));
      }
    });
    child.then(
      () => this.exited(onHint, parser, 'udevadm monitor exited'),
      (error: Error) => this.exited(onHint, parser, `udevadm monitor failed: ${(error as { shortMessage?: string }).shortMessage ?? error.message}`),
    );
  }

  private exited(onHint: (hint: HotplugHint) => void, parser: UdevadmMonitorParser, reason: string): void {
    if (this.closed) return;
    for (const e of parser.end()) onHint(hintOf('udevadm', e));
    onHint({ source: 'udevadm', action: 'rescan', reason });
    const delay = Math.min(60_000, (this.options.restartMs ?? 1000) * 2 ** this.failures);
    this.failures += 1;
    this.restartTimer = setTimeout(() => {
      if (!this.closed) this.start(onHint);
    }, delay);
    this.restartTimer.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.controller.abort();
    await this.child?.catch(() => undefined);
  }
}

/** A `rescan` hint every `ms` milliseconds: the backstop for events every other source can miss. */
export class IntervalSource implements HotplugSource {
  readonly name = 'interval' as const;
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly ms: number) {
    if (!Number.isFinite(ms) || ms < 10) throw new IsogroupError('E_USAGE', `rescan interval must be at least 10 ms, got ${ms}`, { ms });
  }

  start(onHint: (hint: HotplugHint) => void): void {
    if (this.timer) throw new IsogroupError('E_INTERNAL', 'interval source already started', {});
    this.timer = setInterval(() => onHint({ source: 'interval', action: 'rescan', reason: 'periodic' }), this.ms);
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

/** Hints pushed by code (tests, the daemon itself after its own writes). */
export class ManualSource implements HotplugSource {
  readonly name = 'manual' as const;
  private sink: ((hint: HotplugHint) => void) | null = null;

  start(onHint: (hint: HotplugHint) => void): void {
    this.sink = onHint;
  }

  emit(hint: Omit<HotplugHint, 'source'>): void {
    this.sink?.({ source: 'manual', ...hint });
  }

  async close(): Promise<void> {
    this.sink = null;
  }
}

/** Several sources as one. */
export const combineSources = (sources: HotplugSource[]): HotplugSource & { sources: HotplugSource[] } => ({
  name: sources[0]?.name ?? 'manual',
  sources,
  start(onHint) {
    for (const s of sources) s.start(onHint);
  },
  async close() {
    await Promise.all(sources.map((s) => s.close()));
  },
});

export interface LiveSourceChoice {
  source: HotplugSource;
  /** Why netlink was not used, when it was not. */
  fallbackReason?: string;
}

const onPath = (file: string, searchPath: string): boolean =>
  file.includes('/') ? fs.existsSync(file) : searchPath.split(':').some((dir) => dir !== '' && fs.existsSync(path.join(dir, file)));

/**
 * The event source for a live host: the netlink socket when it opens, `udevadm monitor` otherwise, and
 * a source that never fires when neither is there (then only the periodic rescan notices changes; the
 * reason says so). Add an IntervalSource beside it as the backstop.
 */
export const openLiveHotplugSource = (options: NetlinkOptions & UdevadmOptions & { preferUdevadm?: boolean; searchPath: string }): LiveSourceChoice => {
  const udevadm = (why: string): LiveSourceChoice => {
    const command = options.command ?? UDEVADM_MONITOR;
    if (onPath(command[0]!, options.searchPath)) return { source: new UdevadmSource(options), fallbackReason: why };
    return { source: new ManualSource(), fallbackReason: `${why}; ${command[0]} not found either: only the periodic rescan will notice changes` };
  };
  if (options.preferUdevadm) return udevadm('udevadm requested');
  try {
    return { source: NetlinkUeventSource.open(options) };
  } catch (error) {
    const errno = isIsogroupError(error) && typeof error.details.errno === 'string' ? error.details.errno : undefined;
    return udevadm(`netlink unavailable: ${errno ?? (error as Error).message}`);
  }
};
