import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CAP_HEADER,
  DEPENDENT_DEVICE,
  DEVICE_INFO,
  GROUP_STATUS,
  HOT_RESET_INFO,
  KernelVfioBackend,
  parseDeviceInfo,
  parseHotResetInfo,
  parseIommuInfo,
  TYPE1_INFO,
  VFIO_IOCTL,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
} from '../../os/vfio-kernel.js';
import { tmpDir } from '../helpers/tmp.js';

// The lines of include/uapi/linux/vfio.h that define the requests, as the header writes them.
const VFIO_H = `
#define VFIO_TYPE	(';')
#define VFIO_BASE	100
#define VFIO_GET_API_VERSION		_IO(VFIO_TYPE, VFIO_BASE + 0)
#define VFIO_CHECK_EXTENSION		_IO(VFIO_TYPE, VFIO_BASE + 1)
#define VFIO_SET_IOMMU			_IO(VFIO_TYPE, VFIO_BASE + 2)
#define VFIO_GROUP_GET_STATUS		_IO(VFIO_TYPE, VFIO_BASE + 3)
#define VFIO_GROUP_SET_CONTAINER	_IO(VFIO_TYPE, VFIO_BASE + 4)
#define VFIO_GROUP_UNSET_CONTAINER	_IO(VFIO_TYPE, VFIO_BASE + 5)
#define VFIO_GROUP_GET_DEVICE_FD	_IO(VFIO_TYPE, VFIO_BASE + 6)
#define VFIO_DEVICE_GET_INFO		_IO(VFIO_TYPE, VFIO_BASE + 7)
#define VFIO_IOMMU_GET_INFO _IO(VFIO_TYPE, VFIO_BASE + 12)
#define VFIO_DEVICE_GET_PCI_HOT_RESET_INFO	_IO(VFIO_TYPE, VFIO_BASE + 12)
`;

// A tiny evaluator for exactly these macros, with asm-generic/ioctl.h's _IOC layout (dir 30, size 16, type 8, nr 0).
const evalHeader = (text: string): Map<string, number> => {
  const defs = new Map<string, number>();
  const value = (expr: string): number => {
    const e = expr.trim();
    let m = /^\('(.)'\)$/.exec(e);
    if (m) return m[1]!.charCodeAt(0);
    if (/^\d+$/.test(e)) return Number(e);
    m = /^_IO\((\w+),\s*(\w+)\s*\+\s*(\d+)\)$/.exec(e);
    if (m) return (0 << 30) | (0 << 16) | (defs.get(m[1]!)! << 8) | (defs.get(m[2]!)! + Number(m[3]));
    throw new Error(`cannot evaluate ${e}`);
  };
  for (const line of text.split('\n')) {
    const m = /^#define\s+(\w+)\s+(.+)$/.exec(line);
    if (m) defs.set(m[1]!, value(m[2]!));
  }
  return defs;
};

describe('VFIO ioctl numbers', () => {
  const header = evalHeader(VFIO_H);

  it('equal what the header definitions compute to', () => {
    expect(header.get('VFIO_TYPE')).toBe(0x3b);
    for (const [name, nr] of Object.entries(VFIO_IOCTL)) {
      expect(nr, name).toBe(header.get(`VFIO_${name}`));
    }
    expect(Object.keys(VFIO_IOCTL)).toHaveLength(10);
  });

  it('match the values a C compiler gives for the same header', () => {
    // gcc on x86_64 with <linux/vfio.h>: printf("%#lx", VFIO_...)
    expect(VFIO_IOCTL.GET_API_VERSION).toBe(0x3b64);
    expect(VFIO_IOCTL.GROUP_GET_STATUS).toBe(0x3b67);
    expect(VFIO_IOCTL.GROUP_SET_CONTAINER).toBe(0x3b68);
    expect(VFIO_IOCTL.IOMMU_GET_INFO).toBe(0x3b70);
    expect(VFIO_IOCTL.GROUP_GET_DEVICE_FD).toBe(0x3b6a);
    expect(VFIO_IOCTL.DEVICE_GET_INFO).toBe(0x3b6b);
    expect(VFIO_IOCTL.DEVICE_GET_PCI_HOT_RESET_INFO).toBe(0x3b70);
  });

  it('structure layouts follow the C rules (u64 aligned to 8, tail padding)', () => {
    expect(GROUP_STATUS).toMatchObject({ size: 8, argsz: 0, flags: 4 });
    // argsz u32 @0, flags u32 @4, iova_pgsizes u64 @8, cap_offset u32 @16, padded to 24.
    expect(TYPE1_INFO).toMatchObject({ size: 24, iovaPgsizes: 8, capOffset: 16 });
    expect(CAP_HEADER).toMatchObject({ size: 8, id: 0, version: 2, next: 4 });
    // argsz, flags, num_regions, num_irqs, cap_offset, pad: six u32.
    expect(DEVICE_INFO).toMatchObject({ size: 24, flags: 4, numRegions: 8, numIrqs: 12 });
    // argsz, flags, count, then 8-byte entries: group_id u32, segment u16, bus u8, devfn u8.
    expect(HOT_RESET_INFO).toMatchObject({ size: 12, count: 8, devices: 12 });
    expect(DEPENDENT_DEVICE).toMatchObject({ size: 8, groupId: 0, segment: 4, bus: 6, devfn: 7 });
  });
});

// A hot reset info answer as vfio_pci_core.c fills it: header, then one entry per device.
const craftHotReset = (devices: { group: number; segment: number; bus: number; devfn: number }[], options: { count?: number; flags?: number } = {}): Buffer => {
  const b = Buffer.alloc(12 + 8 * devices.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(options.flags ?? 0, 4);
  b.writeUInt32LE(options.count ?? devices.length, 8);
  devices.forEach((d, i) => {
    b.writeUInt32LE(d.group, 12 + 8 * i);
    b.writeUInt16LE(d.segment, 16 + 8 * i);
    b.writeUInt8(d.bus, 18 + 8 * i);
    b.writeUInt8(d.devfn, 19 + 8 * i);
  });
  return b;
};

describe('VFIO_DEVICE_GET_PCI_HOT_RESET_INFO and VFIO_DEVICE_GET_INFO answers', () => {
  it('names every device a bus reset reaches with its group and address', () => {
    const info = parseHotResetInfo(
      craftHotReset([
        { group: 22, segment: 0, bus: 0x0a, devfn: (1 << 3) | 0 },
        { group: 22, segment: 0, bus: 0x0a, devfn: (3 << 3) | 0 },
        { group: 7, segment: 0x10000 & 0xffff, bus: 0xe1, devfn: (0x1f << 3) | 7 },
      ]),
    );
    expect(info.devices).toEqual([
      { groupId: '22', bdf: '0000:0a:01.0' },
      { groupId: '22', bdf: '0000:0a:03.0' },
      { groupId: '7', bdf: '0000:e1:1f.7' },
    ]);
  });

  it('refuses a count the buffer does not hold, a short header, and device ids instead of groups', () => {
    expect(() => parseHotResetInfo(craftHotReset([{ group: 1, segment: 0, bus: 1, devfn: 0 }], { count: 2 }))).toThrow(/2 devices claimed/);
    expect(() => parseHotResetInfo(Buffer.alloc(8))).toThrow(/shorter than the 12-byte header/);
    expect(() => parseHotResetInfo(craftHotReset([{ group: 5, segment: 0, bus: 1, devfn: 0 }], { flags: 1 }))).toThrow(
      expect.objectContaining({ code: 'E_UNSUPPORTED' }),
    );
  });

  it('reads the reset and PCI flags of the device info', () => {
    const b = Buffer.alloc(24);
    b.writeUInt32LE(24, 0);
    b.writeUInt32LE(0x3, 4);
    b.writeUInt32LE(9, 8);
    b.writeUInt32LE(5, 12);
    expect(parseDeviceInfo(b)).toEqual({ flags: 3, reset: true, pci: true, regions: 9, irqs: 5 });
    b.writeUInt32LE(0x2, 4);
    expect(parseDeviceInfo(b).reset).toBe(false);
  });
});

// Build an info buffer the way vfio_iommu_type1.c does: header, then 8-aligned capabilities chained by `next`.
interface CraftCap {
  id: number;
  version?: number;
  body: Buffer;
}
const craftInfo = (caps: CraftCap[], options: { flags?: number; pgsizes?: bigint } = {}): Buffer => {
  const parts: Buffer[] = [];
  let offset = TYPE1_INFO.size;
  const offsets: number[] = [];
  for (const c of caps) {
    offsets.push(offset);
    offset += (8 + c.body.length + 7) & ~7;
  }
  const info = Buffer.alloc(TYPE1_INFO.size);
  info.writeUInt32LE(offset, 0);
  info.writeUInt32LE(options.flags ?? VFIO_IOMMU_INFO_PGSIZES | (caps.length ? VFIO_IOMMU_INFO_CAPS : 0), 4);
  info.writeBigUInt64LE(options.pgsizes ?? 0x40201000n, 8);
  info.writeUInt32LE(caps.length ? offsets[0]! : 0, 16);
  parts.push(info);
  caps.forEach((c, i) => {
    const cap = Buffer.alloc((8 + c.body.length + 7) & ~7);
    cap.writeUInt16LE(c.id, 0);
    cap.writeUInt16LE(c.version ?? 1, 2);
    cap.writeUInt32LE(offsets[i + 1] ?? 0, 4);
    c.body.copy(cap, 8);
    parts.push(cap);
  });
  return Buffer.concat(parts);
};

const iovaBody = (ranges: [bigint, bigint][], count = ranges.length): Buffer => {
  const b = Buffer.alloc(8 + 16 * ranges.length);
  b.writeUInt32LE(count, 0);
  ranges.forEach(([s, e], i) => {
    b.writeBigUInt64LE(s, 8 + 16 * i);
    b.writeBigUInt64LE(e, 16 + 16 * i);
  });
  return b;
};

describe('VFIO_IOMMU_GET_INFO capability chain', () => {
  // Intel VT-d with the MSI window 0xfee00000-0xfeefffff reserved, 48-bit address width.
  const intel: [bigint, bigint][] = [
    [0n, 0xfedfffffn],
    [0xfef00000n, 0xffffffffffffn],
  ];

  it('finds the IOVA ranges behind another capability', () => {
    const migration = Buffer.alloc(24); // flags, pgsize_bitmap, max_dirty_bitmap_size
    const buf = craftInfo([
      { id: VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, body: migration },
      { id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, body: iovaBody(intel) },
    ]);
    const info = parseIommuInfo(buf);
    expect(info.iovaPgsizes).toBe(0x40201000n);
    expect(info.capabilities.map((c) => [c.id, c.offset])).toEqual([
      [VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, 24],
      [VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 24 + 32],
    ]);
    expect(info.iovaRanges).toEqual(intel.map(([start, end]) => ({ start, end })));
  });

  it('reports no ranges when the kernel set no capability flag, even if cap_offset is garbage', () => {
    const buf = craftInfo([], { flags: VFIO_IOMMU_INFO_PGSIZES });
    buf.writeUInt32LE(9999, TYPE1_INFO.capOffset);
    expect(parseIommuInfo(buf)).toMatchObject({ capabilities: [], iovaRanges: null });
  });

  it('keeps a full 64-bit end address exact (bigint, no float rounding)', () => {
    const info = parseIommuInfo(craftInfo([{ id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, body: iovaBody([[0x1000n, 0xffffffffffffffffn]]) }]));
    expect(info.iovaRanges).toEqual([{ start: 0x1000n, end: 0xffffffffffffffffn }]);
  });

  it('refuses hostile chains with a typed error naming the offset', () => {
    const looping = craftInfo([{ id: 2, body: Buffer.alloc(8) }]);
    looping.writeUInt32LE(24, 24 + CAP_HEADER.next); // next points at itself
    expect(() => parseIommuInfo(looping)).toThrow(expect.objectContaining({ code: 'E_INVALID_INPUT', details: { offset: 24 } }));

    const outside = craftInfo([{ id: 2, body: Buffer.alloc(8) }]);
    outside.writeUInt32LE(4096, 24 + CAP_HEADER.next);
    expect(() => parseIommuInfo(outside)).toThrow(/runs past/);

    const intoHeader = craftInfo([{ id: 2, body: Buffer.alloc(8) }]);
    intoHeader.writeUInt32LE(8, TYPE1_INFO.capOffset);
    expect(() => parseIommuInfo(intoHeader)).toThrow(/into the info header/);

    const tooMany = craftInfo([{ id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, body: iovaBody(intel, 1000) }]);
    expect(() => parseIommuInfo(tooMany)).toThrow(/claims 1000 ranges/);

    const backwards = craftInfo([{ id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, body: iovaBody([[0x2000n, 0x1000n]]) }]);
    expect(() => parseIommuInfo(backwards)).toThrow(/starts after it ends/);

    expect(() => parseIommuInfo(Buffer.alloc(20))).toThrow(/shorter than/);
  });
});

describe('KernelVfioBackend on this machine (no vfio devices)', () => {
  it('opening a group whose /dev/vfio/N does not exist fails with errno ENOENT', () => {
    const backend = new KernelVfioBackend();
    expect(fs.existsSync('/dev/vfio/4242')).toBe(false);
    expect(() => backend.openGroup('4242')).toThrow(
      expect.objectContaining({ code: 'E_NOT_FOUND', details: expect.objectContaining({ errno: 'ENOENT', path: '/dev/vfio/4242', group: '4242' }) }),
    );
    const elsewhere = new KernelVfioBackend({ devDir: tmpDir() });
    expect(() => elsewhere.openContainer()).toThrow(expect.objectContaining({ code: 'E_NOT_FOUND', details: expect.objectContaining({ errno: 'ENOENT' }) }));
  });

  it('never lets a group id become anything but a number in the path', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'x'), '');
    const backend = new KernelVfioBackend({ devDir: path.join(dir, 'vfio') });
    for (const bad of ['../x', '7/../../x', '', ' 7', '-1']) {
      expect(() => backend.openGroup(bad)).toThrow(expect.objectContaining({ code: 'E_INVALID_INPUT' }));
    }
  });

  it('sends the real ioctl: a regular file standing in for /dev/vfio/7 answers ENOTTY', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, '7'), '');
    fs.writeFileSync(path.join(dir, 'vfio'), '');
    const backend = new KernelVfioBackend({ devDir: dir });
    const group = backend.openGroup('7');
    expect(group.fd).toBeGreaterThan(2);
    expect(() => group.status()).toThrow(
      expect.objectContaining({ code: 'E_SYSFS_IO', details: expect.objectContaining({ errno: 'ENOTTY', request: '0x3b67', group: '7' }) }),
    );
    group.close();
    group.close(); // idempotent
    expect(() => group.status()).toThrow(/after close/);
    // The container check (GET_API_VERSION) reaches the kernel the same way.
    expect(() => backend.openContainer()).toThrow(expect.objectContaining({ details: expect.objectContaining({ errno: 'ENOTTY', request: '0x3b64' }) }));
  });
});

describe('importing the kernel backend', () => {
  it('loads neither koffi nor libc until the first open', async () => {
    const { execFileSync } = await import('node:child_process');
    const { transpileForChild } = await import('../helpers/child-modules.js');
    const [entry] = transpileForChild(path.join(tmpDir(), 'mod'), ['os/vfio-kernel.ts']);
    const script = `
      import { createRequire } from 'node:module';
      const require = createRequire(import.meta.url);
      const koffiLoaded = () => Object.keys(require.cache).some((k) => k.includes('/koffi/'));
      const { KernelVfioBackend } = await import(process.argv[1]);
      const before = koffiLoaded();
      const backend = new KernelVfioBackend();
      let errno = null;
      try { backend.openGroup('4242'); } catch (e) { errno = e.details.errno; }
      console.log(JSON.stringify({ before, after: koffiLoaded(), errno }));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script, entry!], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ before: false, after: true, errno: 'ENOENT' });
  });
});
