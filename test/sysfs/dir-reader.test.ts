import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileCalls } from '../../os/libc.js';
import { type DirReader, NodeSysfsPort, openDir, pathReader } from '../../sysfs/port.js';
import { scanHost } from '../../sysfs/scan.js';
import { fastTmpDir, pristineRoot } from '../helpers/sim-root.js';

// NodeSysfsPort.openDir holds the directory open and reads entries relative to it (koffi: openat,
// readlinkat, getdents64). Everything it returns, and every error it throws, must be what reading
// each entry by its path through node:fs gives.

type Outcome = { ok: unknown } | { error: { code: unknown; message: unknown } };
const outcome = (f: () => unknown): Outcome => {
  try {
    const v = f();
    return { ok: Buffer.isBuffer(v) ? v.toString('hex') : v };
  } catch (e) {
    const err = e as { code?: unknown; message?: unknown };
    return { error: { code: err.code, message: err.message } };
  }
};

const everything = (reader: DirReader, names: string[]) => ({
  list: outcome(() => reader.list()),
  byName: outcome(() => [...reader.entries()].sort(([a], [b]) => (a < b ? -1 : 1))),
  reads: names.map((n) => [n, outcome(() => reader.readText(n)), outcome(() => reader.readBytes(n)), outcome(() => reader.readLink(n))]),
});

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

describe('directory reader', () => {
  it('is the fd reader here (koffi loads), so the tests below compare two implementations', () => {
    expect(fileCalls()).not.toBeNull();
    const reader = new NodeSysfsPort(pristineRoot('mixed')).openDir('sys/bus/pci');
    expect(reader.constructor.name).toBe('FdDirReader');
    reader.close();
  });

  it('gives what path reads give on every device directory of a capture', () => {
    const root = pristineRoot('mixed');
    const port = new NodeSysfsPort(root);
    const dirs = port.list('sys/bus/pci/devices').map((e) => path.relative(root, fs.realpathSync(path.join(root, 'sys/bus/pci/devices', e.name))));
    expect(dirs.length).toBeGreaterThan(5);
    for (const dir of dirs) {
      const names = [...port.list(dir).map((e) => e.name), 'missing', '..', '../vendor', ''];
      const reader = port.openDir(dir);
      expect([dir, everything(reader, names)]).toEqual([dir, everything(pathReader(port, dir), names)]);
      reader.close();
    }
  });

  it('gives what path reads give on odd entries: large, empty, non-UTF-8 names, links of every kind, a directory', () => {
    const root = fastTmpDir();
    const dir = path.join(root, 'sys/odd');
    fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'large'), Buffer.alloc(70000, 0x61));
    fs.writeFileSync(path.join(dir, 'empty'), '');
    fs.writeFileSync(path.join(dir, 'config'), Buffer.from(Array.from({ length: 4096 }, (_, i) => i & 0xff)));
    fs.writeFileSync(path.join(dir, 'naïve'), 'utf-8 name\n');
    fs.symlinkSync('large', path.join(dir, 'to-file'));
    fs.symlinkSync('../nowhere', path.join(dir, 'dangling'));
    fs.symlinkSync('loop', path.join(dir, 'loop'));
    fs.symlinkSync('x'.repeat(4095), path.join(dir, 'long-target'));
    fs.symlinkSync('sub', path.join(dir, 'to-dir'));
    for (let i = 0; i < 400; i++) fs.writeFileSync(path.join(dir, `attr${i}`), `${i}\n`); // more than one getdents64 buffer
    const port = new NodeSysfsPort(root);
    const names = [...port.list('sys/odd').map((e) => e.name), 'missing', 'sub/..', '.'];
    const reader = port.openDir('sys/odd');
    expect(everything(reader, names)).toEqual(everything(pathReader(port, 'sys/odd'), names));
    expect(reader.list().length).toBe(410);
    reader.close();
    // A directory that is missing or a file: the path reads' errors.
    for (const rel of ['sys/none', 'sys/odd/large']) {
      expect(everything(port.openDir(rel), ['x'])).toEqual(everything(pathReader(port, rel), ['x']));
    }
    // Names never climb out of the directory (or the root) through the held descriptor.
    expect(port.openDir('sys/odd').readText('../odd/naïve')).toBe('utf-8 name\n');
    expect(() => port.openDir('sys/odd').readText('../../../../../../etc/hostname')).toThrow(/ENOENT/);
  });

  it('leaves no descriptor open after a scan, or after readers are closed', () => {
    const port = new NodeSysfsPort(pristineRoot('mixed'));
    scanHost(port);
    const before = openFds();
    for (let i = 0; i < 50; i++) scanHost(port);
    for (let i = 0; i < 200; i++) openDir(port, 'sys/bus/pci/devices').close();
    expect(openFds()).toBe(before);
  });
});
