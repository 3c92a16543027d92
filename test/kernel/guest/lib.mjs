// Helpers for the checks that run INSIDE the test guest: the guest kernel's own sysfs read directly
// (the reference answer), isogroup run as a user would run it, a small VFIO prober of our own, QMP over
// the guest's second serial port, and a reporter that prints every comparison.
// Plain ESM JavaScript on purpose: the guest runs the host's node on the checkout as it is, no build step.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tty from 'node:tty';
import { fileURLToPath } from 'node:url';
import { Qmp } from '../lib/qmp.mjs';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const ISOGROUP = path.join(REPO, 'bin/isogroup');
const PCI = '/sys/bus/pci';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` (sync or async) until it returns a truthy value; returns it, or null after timeoutMs. */
export async function poll(fn, timeoutMs = 20000, everyMs = 20) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) return null;
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------- the guest kernel's sysfs, read directly

const readText = (p) => {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return null;
  }
};
const linkName = (p) => {
  try {
    return path.basename(fs.readlinkSync(p));
  } catch {
    return null;
  }
};

export const sysfs = {
  devices: () => fs.readdirSync(`${PCI}/devices`).sort(),
  exists: (bdf) => fs.existsSync(`${PCI}/devices/${bdf}`),
  driver: (bdf) => linkName(`${PCI}/devices/${bdf}/driver`),
  group: (bdf) => linkName(`${PCI}/devices/${bdf}/iommu_group`),
  /** reset_method as the kernel lists it; [] when the device has none (no file). */
  resetMethod: (bdf) => (readText(`${PCI}/devices/${bdf}/reset_method`) ?? '').split(/\s+/).filter(Boolean),
  override: (bdf) => {
    const v = readText(`${PCI}/devices/${bdf}/driver_override`);
    return v === '(null)' || v === '' ? null : v;
  },
  cls: (bdf) => readText(`${PCI}/devices/${bdf}/class`),
  isBridge: (bdf) => (readText(`${PCI}/devices/${bdf}/class`) ?? '').startsWith('0x0604'),
  autoprobe: () => readText(`${PCI}/drivers_autoprobe`),
  /** Child bus of a bridge, e.g. "0000:0a". */
  secondaryBus: (bdf) => {
    try {
      return fs.readdirSync(`${PCI}/devices/${bdf}/pci_bus`)[0] ?? null;
    } catch {
      return null;
    }
  },
  /** Upstream bridge BDF, from the device's sysfs path (null on a root bus). */
  parent: (bdf) => {
    const up = path.basename(path.dirname(fs.realpathSync(`${PCI}/devices/${bdf}`)));
    return /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(up) ? up : null;
  },
  /** PCIe port type from the config space capability list (null: no PCIe capability). */
  pcieType: (bdf) => {
    let c;
    try {
      c = fs.readFileSync(`${PCI}/devices/${bdf}/config`);
    } catch {
      return null;
    }
    if (c.length < 64 || !(c.readUInt16LE(6) & 0x10)) return null;
    let p = c[0x34] & 0xfc;
    for (let n = 0; p && n < 48 && p + 4 <= c.length; n++) {
      if (c[p] === 0x10) return (c[p + 2] >> 4) & 0xf;
      p = c[p + 1] & 0xfc;
    }
    return null;
  },
  /** The kernel's groups: id -> sorted member BDFs. */
  groups: () => {
    const out = new Map();
    for (const g of fs.readdirSync('/sys/kernel/iommu_groups')) {
      out.set(g, fs.readdirSync(`/sys/kernel/iommu_groups/${g}/devices`).sort());
    }
    return out;
  },
  /** Writes one sysfs attribute; returns null or the errno code ("EBUSY"). */
  write: (rel, value) => {
    try {
      fs.writeFileSync(rel.startsWith('/') ? rel : `${PCI}/${rel}`, value);
      return null;
    } catch (e) {
      return e.code ?? String(e);
    }
  },
};

/** Moves a device to `driver` by address (override, unbind, probe) and reads the driver link back. */
export function rawBind(bdf, driver) {
  sysfs.write(`devices/${bdf}/driver_override`, driver);
  if (sysfs.driver(bdf)) sysfs.write(`devices/${bdf}/driver/unbind`, bdf);
  sysfs.write('drivers_probe', bdf);
  return sysfs.driver(bdf);
}

/** Clears the override and lets the kernel pick the host driver again. */
export function rawRelease(bdf) {
  sysfs.write(`devices/${bdf}/driver_override`, '\n');
  if (sysfs.driver(bdf)) sysfs.write(`devices/${bdf}/driver/unbind`, bdf);
  sysfs.write('drivers_probe', bdf);
  return sysfs.driver(bdf);
}

/** Endpoints of a group: what gets bound to vfio-pci (bridges stay where they are). */
export const endpointsOf = (members) => members.filter((b) => !sysfs.isBridge(b));

/** Snapshot of {bdf: {driver, override}} for a set of devices. */
export const driverState = (bdfs) => Object.fromEntries(bdfs.map((b) => [b, { driver: sysfs.driver(b), override: sysfs.override(b) }]));

export function modprobe(...mods) {
  const r = spawnSync('modprobe', ['-a', ...mods], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`modprobe ${mods.join(' ')} failed: ${r.stderr.trim()}`);
}

/** Kernel log records since the last call (non-blocking /dev/kmsg reader). */
export class Kmsg {
  constructor() {
    this.fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    this.lines = [];
  }
  read() {
    const buf = Buffer.alloc(8192);
    const fresh = [];
    for (;;) {
      let n;
      try {
        n = fs.readSync(this.fd, buf, 0, buf.length, null);
      } catch (e) {
        if (e.code === 'EAGAIN') break;
        if (e.code === 'EPIPE') continue; // records overwritten before we read them
        throw e;
      }
      const rec = buf.subarray(0, n).toString('utf8');
      const semi = rec.indexOf(';');
      fresh.push(rec.slice(semi + 1).split('\n')[0]);
    }
    this.lines.push(...fresh);
    return fresh;
  }
  close() {
    fs.closeSync(this.fd);
  }
}

// ---------------------------------------------------------------- isogroup, run as a user runs it

export class CommandMissing extends Error {}

/** Runs isogroup and returns {code, stdout, stderr, json, ms}. Throws CommandMissing when the CLI does
 * not know the command or one of its options (the feature has not landed).
 * Every start of node + the CLI's modules costs 10-60 s under TCG, so by default the commands run
 * in this process through the CLI's own entry point (`runCli` from dist/cli/main.js, what bin/isogroup
 * calls); `{spawn: true}` (or KT_SPAWN=1) starts bin/isogroup as a separate process instead. */
export async function isogroup(args, { spawn: separate = process.env.KT_SPAWN === '1', timeoutMs = 600000 } = {}) {
  const t0 = Date.now();
  let res;
  if (separate) {
    const r = spawnSync(process.execPath, [ISOGROUP, ...args], { encoding: 'utf8', timeout: timeoutMs, cwd: REPO, maxBuffer: 64 << 20 });
    res = { args, code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  } else {
    const { runCli } = await import(path.join(REPO, 'dist/cli/main.js'));
    const out = [];
    const err = [];
    let code;
    try {
      code = await runCli(args, { stdout: (x) => out.push(x), stderr: (x) => err.push(x) });
    } catch (e) {
      code = 99;
      err.push(`runCli threw: ${e?.stack ?? e}`);
    }
    res = { args, code, signal: null, stdout: out.join(''), stderr: err.join('') };
  }
  res.ms = Date.now() - t0;
  const unknown = /error: unknown (command|option) '([^']+)'/.exec(res.stderr);
  if (unknown) throw new CommandMissing(`command missing: \`isogroup ${args.join(' ')}\` -> unknown ${unknown[1]} '${unknown[2]}'`);
  try {
    res.json = JSON.parse(res.stdout);
  } catch {
    res.json = undefined;
  }
  return res;
}

/** Throws CommandMissing unless the CLI registers `name` (asked before a check touches anything). */
export async function requireCommand(name) {
  const { buildProgram } = await import(path.join(REPO, 'dist/cli/program.js'));
  const program = buildProgram({ stdout: () => {}, stderr: () => {} });
  if (!program.commands.some((c) => c.name() === name)) throw new CommandMissing(`command missing: \`isogroup ${name}\` is not registered in the CLI`);
}

/** Starts bin/isogroup in the background (daemon, an assign to be killed). */
export function isogroupAsync(args, logFile) {
  const child = spawn(process.execPath, [ISOGROUP, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '', code: null, signal: null, exited: false };
  const log = logFile ? fs.createWriteStream(logFile, { flags: 'a' }) : null;
  child.stdout.on('data', (d) => {
    out.stdout += d;
    log?.write(d);
  });
  child.stderr.on('data', (d) => {
    out.stderr += d;
    log?.write(d);
  });
  out.done = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      Object.assign(out, { code, signal, exited: true });
      log?.end();
      resolve(out);
    }),
  );
  out.child = child;
  return out;
}

export const shortOut = (r) =>
  `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}: ${(r.stderr || r.stdout).trim().split('\n').slice(0, 6).join(' | ').slice(0, 600)}`;

// ---------------------------------------------------------------- VFIO, through our own ioctl calls

// linux/vfio.h: _IO(';', 100 + n)
const VFIO = {
  GET_API_VERSION: 0x3b64,
  CHECK_EXTENSION: 0x3b65,
  SET_IOMMU: 0x3b66,
  GROUP_GET_STATUS: 0x3b67,
  GROUP_SET_CONTAINER: 0x3b68,
  GROUP_UNSET_CONTAINER: 0x3b69,
  GROUP_GET_DEVICE_FD: 0x3b6a,
  DEVICE_GET_INFO: 0x3b6b,
  IOMMU_GET_INFO: 0x3b70,
  DEVICE_GET_PCI_HOT_RESET_INFO: 0x3b70, // on a device fd; the same number as IOMMU_GET_INFO on a container
  DEVICE_FLAGS_RESET: 1,
  TYPE1v2_IOMMU: 3,
  GROUP_FLAGS_VIABLE: 1,
  GROUP_FLAGS_CONTAINER_SET: 2,
  IOMMU_INFO_CAPS: 2,
  CAP_IOVA_RANGE: 1,
};
let libc = null;
async function ioctlFn() {
  if (!libc) {
    const { default: koffi } = await import('koffi');
    const lib = koffi.load('libc.so.6');
    libc = { ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)'), errno: () => koffi.errno() };
  }
  return libc;
}
const errnoName = (n) => Object.entries(os.constants.errno).find(([, v]) => v === n)?.[0] ?? `errno ${n}`;

/** Minimal VFIO prober: returns errno names instead of throwing, so checks can compare them. */
export class Vfio {
  static async create() {
    await ioctlFn();
    return new Vfio();
  }
  ioctlPtr(fd, req, buf) {
    const r = libc.ioctl(fd, req, 'void *', buf);
    return r < 0 ? { r, err: errnoName(libc.errno()) } : { r, err: null };
  }
  ioctlVal(fd, req, v) {
    const r = libc.ioctl(fd, req, 'unsigned long', v);
    return r < 0 ? { r, err: errnoName(libc.errno()) } : { r, err: null };
  }
  /** open() of /dev/vfio/N or /dev/vfio/vfio: {fd} or {err: 'EBUSY'} */
  open(p) {
    try {
      return { fd: fs.openSync(p, fs.constants.O_RDWR), err: null };
    } catch (e) {
      return { fd: -1, err: e.code };
    }
  }
  close(fd) {
    if (fd >= 0)
      try {
        fs.closeSync(fd);
      } catch {
        /* already closed */
      }
  }
  container() {
    const c = this.open('/dev/vfio/vfio');
    if (c.err) return c;
    return { ...c, api: this.ioctlVal(c.fd, VFIO.GET_API_VERSION, 0).r, type1v2: this.ioctlVal(c.fd, VFIO.CHECK_EXTENSION, VFIO.TYPE1v2_IOMMU).r };
  }
  groupFlags(fd) {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(8, 0);
    const { err } = this.ioctlPtr(fd, VFIO.GROUP_GET_STATUS, b);
    const flags = b.readUInt32LE(4);
    return { err, flags, viable: !!(flags & VFIO.GROUP_FLAGS_VIABLE), containerSet: !!(flags & VFIO.GROUP_FLAGS_CONTAINER_SET) };
  }
  setContainer(groupFd, containerFd) {
    const b = Buffer.alloc(4);
    b.writeInt32LE(containerFd, 0);
    return this.ioctlPtr(groupFd, VFIO.GROUP_SET_CONTAINER, b).err;
  }
  setIommu(containerFd) {
    return this.ioctlVal(containerFd, VFIO.SET_IOMMU, VFIO.TYPE1v2_IOMMU).err;
  }
  deviceFd(groupFd, bdf) {
    const { r, err } = this.ioctlPtr(groupFd, VFIO.GROUP_GET_DEVICE_FD, Buffer.from(`${bdf}\0`));
    return err ? { fd: -1, err } : { fd: r, err: null };
  }
  /** VFIO_DEVICE_GET_INFO: {flags, reset} (reset: the kernel could reset the function alone when it was opened). */
  deviceInfo(deviceFd) {
    const b = Buffer.alloc(24);
    b.writeUInt32LE(24, 0);
    const { err } = this.ioctlPtr(deviceFd, VFIO.DEVICE_GET_INFO, b);
    if (err) return { err };
    const flags = b.readUInt32LE(4);
    return { err: null, flags, reset: !!(flags & VFIO.DEVICE_FLAGS_RESET) };
  }
  /** VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: every device a bus/slot reset reaches, with its group; {err: 'ENODEV'} when none is possible. */
  hotResetInfo(deviceFd) {
    let size = 12; // argsz, flags, count; the kernel answers ENOSPC with the count it needs room for
    for (let round = 0; round < 3; round++) {
      const b = Buffer.alloc(size);
      b.writeUInt32LE(size, 0);
      const { err } = this.ioctlPtr(deviceFd, VFIO.DEVICE_GET_PCI_HOT_RESET_INFO, b);
      if (err === 'ENOSPC') {
        size = 12 + 8 * b.readUInt32LE(8);
        continue;
      }
      if (err) return { err };
      const devices = [];
      for (let i = 0; i < b.readUInt32LE(8); i++) {
        const at = 12 + 8 * i;
        const devfn = b[at + 7];
        const bdf = `${b
          .readUInt16LE(at + 4)
          .toString(16)
          .padStart(4, '0')}:${b[at + 6].toString(16).padStart(2, '0')}:${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7}`;
        devices.push({ group: String(b.readUInt32LE(at)), bdf });
      }
      return { err: null, flags: b.readUInt32LE(4), devices };
    }
    return { err: 'EMSGSIZE' };
  }
  /** VFIO_IOMMU_GET_INFO with its capability chain: the kernel's usable IOVA ranges. */
  iommuInfo(containerFd) {
    let size = 24;
    for (let round = 0; round < 3; round++) {
      const b = Buffer.alloc(size);
      b.writeUInt32LE(size, 0);
      const { err } = this.ioctlPtr(containerFd, VFIO.IOMMU_GET_INFO, b);
      if (err) return { err };
      const need = b.readUInt32LE(0);
      if (need > size) {
        size = need;
        continue;
      } // the kernel asks for room for its capabilities
      const flags = b.readUInt32LE(4);
      const info = { err: null, pgsizes: b.readBigUInt64LE(8), ranges: null };
      let off = flags & VFIO.IOMMU_INFO_CAPS ? b.readUInt32LE(16) : 0;
      for (let n = 0; off && off + 8 <= b.length && n < 32; n++) {
        const id = b.readUInt16LE(off);
        if (id === VFIO.CAP_IOVA_RANGE) {
          const count = b.readUInt32LE(off + 8);
          info.ranges = [];
          for (let i = 0; i < count; i++) info.ranges.push({ start: b.readBigUInt64LE(off + 16 + i * 16), end: b.readBigUInt64LE(off + 24 + i * 16) });
        }
        off = b.readUInt32LE(off + 4);
      }
      return info;
    }
    return { err: 'EMSGSIZE' };
  }
}

// ---------------------------------------------------------------- QMP from inside the guest

/** QMP session over /dev/ttyS1; the host relays the line to QEMU's QMP socket (lib/qmp-relay.mjs). */
export function openQmpTty(dev = process.env.KT_QMP_TTY || '/dev/ttyS1') {
  spawnSync('stty', ['-F', dev, '115200', 'raw', '-echo'], { stdio: 'ignore' });
  const fd = fs.openSync(dev, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
  const input = new tty.ReadStream(fd);
  input.setRawMode(true);
  const output = { write: (s) => fs.writeSync(fd, s) };
  const q = new Qmp(input, output);
  q.close = () => {
    input.destroy();
  };
  return q;
}

// ---------------------------------------------------------------- reporting

export const hex = (v) => `0x${BigInt(v).toString(16)}`;
const show = (v) => (typeof v === 'string' ? v : JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? hex(x) : x)));

/** One check: every comparison is printed as "kernel=... isogroup=..." and recorded. */
export class Check {
  constructor(name, topology) {
    Object.assign(this, { name, topology, status: 'pass', compared: [], failures: [], notes: [], t0: Date.now() });
    console.log(`\n=== [${topology}] ${name}`);
  }
  note(msg) {
    this.notes.push(msg);
    console.log(`    ${msg}`);
  }
  /** Compares the kernel's answer with isogroup's (or the expected one); a difference fails the check. */
  compare(what, kernel, other, { label = 'isogroup', left = 'kernel', equal } = {}) {
    const ok = equal ? equal(kernel, other) : show(kernel) === show(other);
    const long = show(kernel).length > 160;
    const line =
      ok && long
        ? `${what}: ${left} and ${label} agree (${Array.isArray(kernel) ? `${kernel.length} items` : 'same value'}) ok`
        : `${what}: ${left}=${show(kernel)} ${label}=${show(other)} ${ok ? 'ok' : 'MISMATCH'}`;
    this.compared.push({ what, [left]: show(kernel), [label]: show(other), ok });
    console.log(`  ${ok ? '✓' : '✗'} ${line.length > 1500 ? `${line.slice(0, 1500)}…` : line}`);
    if (!ok) this.failures.push(`${what}: ${left}=${show(kernel)} ${label}=${show(other)}`);
    return ok;
  }
  expect(cond, what) {
    this.compared.push({ what, ok: !!cond });
    console.log(`  ${cond ? '✓' : '✗'} ${what}`);
    if (!cond) this.failures.push(what);
    return !!cond;
  }
  fail(msg) {
    this.failures.push(msg);
    console.log(`  ✗ ${msg}`);
  }
  skip(msg) {
    this.status = 'skipped';
    this.notes.push(`skipped: ${msg}`);
    console.log(`  - skipped: ${msg}`);
  }
  finish() {
    if (this.failures.length) this.status = 'failed';
    this.ms = Date.now() - this.t0;
    console.log(
      `--- ${this.status.toUpperCase()} [${this.topology}] ${this.name} (${(this.ms / 1000).toFixed(1)} s)${this.failures.length ? `: ${this.failures.length} failure(s)` : ''}`,
    );
    return {
      name: `${this.topology}/${this.name}`,
      topology: this.topology,
      check: this.name,
      status: this.status,
      ms: this.ms,
      failures: this.failures,
      notes: this.notes,
      compared: this.compared,
    };
  }
}
