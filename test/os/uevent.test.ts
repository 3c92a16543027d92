import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { C, sysBind, sysClose, sysSendMsg, sysSocket } from '../../os/libc.js';
import {
  combineSources,
  type HotplugHint,
  IntervalSource,
  ManualSource,
  NetlinkUeventSource,
  openLiveHotplugSource,
  parseUevent,
  UdevadmMonitorParser,
  UdevadmSource,
} from '../../os/uevent.js';
import { tmpDir } from '../helpers/tmp.js';

// Child processes and watchers start slowly on a loaded 2-core machine: wait generously (no fixed sleeps).
const poll = <T>(fn: () => T) => expect.poll(fn, { timeout: 15_000 });

// A datagram as lib/kobject_uevent.c builds it: "action@devpath\0" then KEY=VALUE\0 pairs.
const kernelMessage = (action: string, devpath: string, props: Record<string, string>): Buffer =>
  Buffer.from([`${action}@${devpath}`, ...Object.entries({ ACTION: action, DEVPATH: devpath, ...props }).map(([k, v]) => `${k}=${v}`), ''].join('\0'));

const ADD = kernelMessage('add', '/devices/pci0000:00/0000:00:1e.0/0000:0a:04.0', {
  SUBSYSTEM: 'pci',
  PCI_CLASS: '20000',
  PCI_ID: '8086:100E',
  PCI_SUBSYS_ID: '1AF4:1100',
  PCI_SLOT_NAME: '0000:0a:04.0',
  MODALIAS: 'pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00',
  SEQNUM: '2412',
});

describe('parseUevent (kernel netlink datagrams)', () => {
  it('parses an add event of a PCI device', () => {
    expect(parseUevent(ADD)).toEqual({
      action: 'add',
      devpath: '/devices/pci0000:00/0000:00:1e.0/0000:0a:04.0',
      subsystem: 'pci',
      bdf: '0000:0a:04.0',
      seqnum: 2412,
      props: expect.objectContaining({ PCI_ID: '8086:100E', MODALIAS: expect.stringMatching(/^pci:v00008086/) }),
    });
  });

  it('takes the driver from bind events and the BDF from the devpath when PCI_SLOT_NAME is missing', () => {
    const bind = kernelMessage('bind', '/devices/pci0000:00/0000:00:1c.0/0000:01:00.0', { SUBSYSTEM: 'pci', DRIVER: 'e1000e', SEQNUM: '7' });
    expect(parseUevent(bind)).toMatchObject({ action: 'bind', bdf: '0000:01:00.0', driver: 'e1000e', seqnum: 7 });
    const bus = kernelMessage('add', '/devices/pci0000:00/pci_bus/0000:00', { SUBSYSTEM: 'pci_bus', SEQNUM: 'x' });
    const parsed = parseUevent(bus);
    expect(parsed).toMatchObject({ subsystem: 'pci_bus', seqnum: null });
    expect(parsed).not.toHaveProperty('bdf');
  });

  it('upper-case slot names are normalised; a bogus slot name gives no BDF', () => {
    expect(parseUevent(kernelMessage('remove', '/devices/x', { SUBSYSTEM: 'pci', PCI_SLOT_NAME: '0000:0A:04.0' }))).toMatchObject({ bdf: '0000:0a:04.0' });
    expect(parseUevent(kernelMessage('remove', '/devices/x', { SUBSYSTEM: 'pci', PCI_SLOT_NAME: '../../etc' }))).not.toHaveProperty('bdf');
  });

  it('rejects what is not a kernel uevent', () => {
    expect(parseUevent(Buffer.from('libudev\0\xfe\xed\xca\xfe'))).toBeNull(); // udev's re-broadcast
    expect(parseUevent(Buffer.from('no header here\0ACTION=add\0'))).toBeNull();
    expect(parseUevent(Buffer.from('add@/devices/a\0ACTION=remove\0DEVPATH=/devices/a\0'))).toBeNull(); // header disagrees
    expect(parseUevent(Buffer.alloc(0))).toBeNull();
  });
});

describe('udevadm monitor output', () => {
  const OUTPUT = [
    'monitor will print the received events for:',
    'KERNEL - the kernel uevent',
    '',
    'KERNEL[2411.640385] add      /devices/pci0000:00/0000:00:1e.0/0000:0a:04.0 (pci)',
    'ACTION=add',
    'DEVPATH=/devices/pci0000:00/0000:00:1e.0/0000:0a:04.0',
    'SUBSYSTEM=pci',
    'PCI_SLOT_NAME=0000:0a:04.0',
    'SEQNUM=2412',
    '',
    'KERNEL[2411.655121] bind     /devices/pci0000:00/0000:00:1e.0/0000:0a:04.0 (pci)',
    'ACTION=bind',
    'DEVPATH=/devices/pci0000:00/0000:00:1e.0/0000:0a:04.0',
    'SUBSYSTEM=pci',
    'DRIVER=e1000',
    'PCI_SLOT_NAME=0000:0a:04.0',
    'SEQNUM=2413',
    '',
  ].join('\n');

  it('parses events however the stream is chunked', () => {
    for (const size of [1, 7, 64, OUTPUT.length]) {
      const parser = new UdevadmMonitorParser();
      const events = [];
      for (let i = 0; i < OUTPUT.length; i += size) events.push(...parser.push(OUTPUT.slice(i, i + size)));
      events.push(...parser.end());
      expect(events.map((e) => [e.action, e.bdf, e.driver, e.seqnum])).toEqual([
        ['add', '0000:0a:04.0', undefined, 2412],
        ['bind', '0000:0a:04.0', 'e1000', 2413],
      ]);
    }
  });

  it('flushes an event cut off by the end of the stream', () => {
    const parser = new UdevadmMonitorParser();
    expect(parser.push('KERNEL[1.0] remove /devices/pci0000:00/0000:00:03.0 (pci)\nACTION=remove\nSEQNUM=9')).toEqual([]);
    expect(parser.end()).toMatchObject([{ action: 'remove', bdf: '0000:00:03.0', seqnum: 9, subsystem: 'pci' }]);
  });
});

// Send a datagram to the kernel-uevent multicast group from a second netlink socket (needs CAP_NET_ADMIN).
const sendToUeventGroup = (message: Buffer): void => {
  const fd = sysSocket(C.AF_NETLINK, C.SOCK_DGRAM, C.NETLINK_KOBJECT_UEVENT);
  try {
    const self = Buffer.alloc(12);
    self.writeUInt16LE(C.AF_NETLINK, 0);
    sysBind(fd, self);
    const to = Buffer.alloc(12);
    to.writeUInt16LE(C.AF_NETLINK, 0);
    to.writeUInt32LE(1, 8); // group 1
    sysSendMsg(fd, [message], null, 0, { to });
  } finally {
    sysClose(fd);
  }
};

describe('NetlinkUeventSource', () => {
  it('opens, binds and drains on a timer without blocking the event loop; close releases the socket', async () => {
    const source = NetlinkUeventSource.open();
    const hints: HotplugHint[] = [];
    source.start((h) => hints.push(h));
    let ticks = 0;
    const tick = setInterval(() => (ticks += 1), 1);
    onTestFinished(() => clearInterval(tick));
    // Both the source's drain timer and an unrelated timer keep running.
    await poll(() => source.counts.polls >= 5 && ticks >= 5).toBe(true);
    await source.close();
    await source.close();
    const polls = source.counts.polls;
    await poll(() => ticks).toBeGreaterThan(ticks + 3);
    expect(source.counts.polls).toBe(polls);
  });

  it('ignores a message a process (not the kernel) sent to the uevent group', async () => {
    const source = NetlinkUeventSource.open();
    onTestFinished(() => source.close());
    const hints: HotplugHint[] = [];
    source.start((h) => hints.push(h));
    sendToUeventGroup(ADD);
    await poll(() => source.counts.ignored).toBeGreaterThanOrEqual(1);
    expect(hints.filter((h) => h.bdf === '0000:0a:04.0')).toEqual([]);
  });

  it('delivers a crafted message through the real socket when told to trust user senders', async () => {
    const source = NetlinkUeventSource.open({ acceptUserSenders: true });
    onTestFinished(() => source.close());
    const hints: HotplugHint[] = [];
    source.start((h) => hints.push(h));
    sendToUeventGroup(kernelMessage('add', '/devices/virtual/net/x', { SUBSYSTEM: 'net', SEQNUM: '1' })); // other subsystem: filtered
    sendToUeventGroup(ADD);
    await poll(() => hints.find((h) => h.seqnum === 2412)).toMatchObject({ source: 'netlink', action: 'add', bdf: '0000:0a:04.0' });
    expect(hints.some((h) => h.devpath === '/devices/virtual/net/x')).toBe(false);
  });

  it('is what openLiveHotplugSource picks here; udevadm when asked', async () => {
    const searchPath = process.env.PATH ?? '';
    const live = openLiveHotplugSource({ searchPath });
    expect(live.source.name).toBe('netlink');
    expect(live.fallbackReason).toBeUndefined();
    await live.source.close();
    expect(openLiveHotplugSource({ preferUdevadm: true, command: [process.execPath, '-e', ''], searchPath }).source.name).toBe('udevadm');
    // Neither netlink (asked away) nor the monitor binary: a silent source, and the reason says so.
    const none = openLiveHotplugSource({ preferUdevadm: true, command: ['/nonexistent/udevadm'], searchPath });
    expect(none.source.name).toBe('manual');
    expect(none.fallbackReason).toMatch(/not found either: only the periodic rescan/);
  });
});

describe('UdevadmSource (through execa)', () => {
  it('streams events from the monitor process, restarts it when it exits, and kills it on close', async () => {
    const dir = tmpDir();
    const pidFile = path.join(dir, 'pids');
    // A stand-in for udevadm: prints one event in two chunks, exits the first time, stays up the second.
    const script = `
      const fs = require('fs');
      fs.appendFileSync(${JSON.stringify(pidFile)}, process.pid + '\\n');
      const run = fs.readFileSync(${JSON.stringify(pidFile)}, 'utf8').trim().split('\\n').length;
      process.stdout.write('KERNEL[5.0] add /devices/pci0000:00/0000:00:0' + run + '.0 (pci)\\nACTION=add\\nSUB');
      setTimeout(() => {
        process.stdout.write('SYSTEM=pci\\nSEQNUM=' + run + '\\n\\n');
        if (run === 1) process.exit(0);
        setInterval(() => {}, 1000);
      }, 20);`;
    const source = new UdevadmSource({ command: [process.execPath, '-e', script], restartMs: 10 });
    const hints: HotplugHint[] = [];
    source.start((h) => hints.push(h));
    await poll(() => hints.map((h) => `${h.action}:${h.bdf ?? h.reason}`)).toEqual(['add:0000:00:01.0', 'rescan:udevadm monitor exited', 'add:0000:00:02.0']);
    await source.close();
    const pids = fs.readFileSync(pidFile, 'utf8').trim().split('\n').map(Number);
    expect(pids).toHaveLength(2);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  });
});

describe('IntervalSource, ManualSource, combineSources', () => {
  it('emits a rescan hint per period and nothing after close', async () => {
    vi.useFakeTimers();
    onTestFinished(() => {
      vi.useRealTimers();
    });
    const source = new IntervalSource(20);
    const hints: HotplugHint[] = [];
    source.start((h) => hints.push(h));
    vi.advanceTimersByTime(100);
    expect(hints).toHaveLength(5);
    expect(hints[0]).toEqual({ source: 'interval', action: 'rescan', reason: 'periodic' });
    await source.close();
    vi.advanceTimersByTime(100);
    expect(hints).toHaveLength(5);
    expect(() => new IntervalSource(0)).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
  });

  it('combines sources into one stream', async () => {
    const a = new ManualSource();
    const b = new ManualSource();
    const all = combineSources([a, b]);
    const hints: HotplugHint[] = [];
    all.start((h) => hints.push(h));
    a.emit({ action: 'add' });
    b.emit({ action: 'remove' });
    await all.close();
    a.emit({ action: 'lost' });
    expect(hints.map((h) => h.action)).toEqual(['add', 'remove']);
  });
});
