import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { importLspci } from '../../api/capture.js';
import { scan } from '../../api/read.js';
import { buildConfig } from '../../bench/config-builder.js';
import { parseLspci, synthesizeExtended } from '../../capture/lspci-import.js';
import { runCli } from '../../cli/main.js';
import { isIsogroupError } from '../../errors.js';
import { parseConfigSpace } from '../../model/config-space.js';
import { sharedDir } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

// One device as `lspci -nnDvvvxxxx` prints it: header line, decoded lines, hex rows.
const block = (bdf: string, bytes: Uint8Array, decoded: string[] = []): string => {
  const rows: string[] = [];
  for (let o = 0; o < bytes.length; o += 16) {
    rows.push(`${o.toString(16).padStart(o >= 0x100 ? 3 : 2, '0')}: ${[...bytes.subarray(o, o + 16)].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`);
  }
  const id = `${((bytes[1]! << 8) | bytes[0]!).toString(16).padStart(4, '0')}:${((bytes[3]! << 8) | bytes[2]!).toString(16).padStart(4, '0')}`;
  return [`${bdf} Device [0000]: Crafted [${id}]`, ...decoded.map((l) => `\t${l}`), ...rows, ''].join('\n');
};

const expectInvalid = (fn: () => unknown, pattern: RegExp): void => {
  try {
    fn();
  } catch (error) {
    expect(isIsogroupError(error)).toBe(true);
    expect((error as { code: string }).code).toBe('E_INVALID_INPUT');
    expect((error as Error).message).toMatch(pattern);
    return;
  }
  throw new Error('expected E_INVALID_INPUT');
};

const rootPort = buildConfig({
  vendor: 0x1022,
  device: 0x1483,
  classCode: 0x060400,
  bridge: true,
  primary: 0,
  secondary: 1,
  subordinate: 2,
  pcieType: 4,
  acs: { cap: 0x5f, ctrl: 0x1d },
});
const upstream = buildConfig({ vendor: 0x1022, device: 0x57ad, classCode: 0x060400, bridge: true, primary: 1, secondary: 2, subordinate: 2, pcieType: 5 });
const endpoint = buildConfig({ vendor: 0x10de, device: 0x2204, classCode: 0x030000, pcieType: 0 });

describe('parseLspci: bad input names the file and the line', () => {
  const cases: [string, string, RegExp][] = [
    ['hex before any header', '00: 86 80 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n', /dump\.txt:1: hex dump row before any device header/],
    [
      'a gap in the hex rows',
      `0000:00:00.0 Host bridge [0600]: X [8086:1234]\n00: ${'00 '.repeat(15)}00\n20: ${'00 '.repeat(15)}00\n`,
      /dump\.txt:3: hex row at offset 0x20 .* expected 0x10/,
    ],
    ['a short hex row', '0000:00:00.0 Host bridge [0600]: X [8086:1234]\n00: 86 80\n', /dump\.txt:2: hex row has 2 bytes/],
    ['a line that is neither', '0000:00:00.0 Host bridge [0600]: X [8086:1234]\nhello world\n', /dump\.txt:2: "hello world" is neither a device header/],
    ['a device number above 1f', '0000:00:20.0 Host bridge [0600]: X [8086:1234]\n', /dump\.txt:1: device number 20/],
    [
      'a device without hex dump',
      '0000:00:00.0 Host bridge [0600]: X [8086:1234]\n\tKernel driver in use: foo\n',
      /dump\.txt:1: device 0000:00:00\.0 has no hex dump/,
    ],
    [
      'a driver name that could be a path',
      `0000:00:00.0 X [0600]: X [8086:1234]\n\tKernel driver in use: ../../etc\n00: ${'00 '.repeat(15)}00\n`,
      /dump\.txt:2: driver name "\.\.\/\.\.\/etc"/,
    ],
    ['a non-numeric IOMMU group', `0000:00:00.0 X [0600]: X [8086:1234]\n\tIOMMU group: 1/../2\n00: ${'00 '.repeat(15)}00\n`, /dump\.txt:2: IOMMU group/],
    ['no devices at all', '\n\n', /dump\.txt:3: no PCI devices found/],
  ];
  it.each(cases)('%s', (_name, text, pattern) => expectInvalid(() => parseLspci(text, 'dump.txt'), pattern));

  it('a device listed twice', () => {
    const text = block('0000:00:00.0', endpoint.subarray(0, 64)) + block('0000:00:00.0', endpoint.subarray(0, 64));
    expectInvalid(() => parseLspci(text, 'dump.txt'), /dump\.txt:6: device 0000:00:00\.0 appears twice/);
  });

  it('importLspci on a missing file names it', () => {
    expectInvalid(() => importLspci('/nonexistent/lspci.txt', path.join(tmpDir(), 'out')), /\/nonexistent\/lspci\.txt: cannot read: ENOENT/);
  });
});

describe('parseLspci', () => {
  it('reads the short BB:DD.F form of the pciutils dumps as domain 0000', () => {
    const text = block('00:1f.3', endpoint.subarray(0, 256)).replace(/ Device \[0000\]: Crafted \[[^\]]+\]/, ' Audio device: Intel');
    const [d] = parseLspci(text, 'x');
    expect(d!.bdf).toBe('0000:00:1f.3');
    expect(d!.config.length).toBe(256);
  });

  it('reads driver, IOMMU group, NUMA node and the extended capabilities lspci decoded', () => {
    const text = block('0000:00:01.1', rootPort.subarray(0, 256), [
      'NUMA node: 1',
      'IOMMU group: 7',
      'Capabilities: [40] Express (v2) Root Port (Slot+), MSI 00',
      'Capabilities: [100 v1] Advanced Error Reporting',
      'Capabilities: [140 v1] Access Control Services',
      '\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans+',
      '\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-',
      'Kernel driver in use: pcieport',
      'Kernel modules: shpchp',
    ]);
    const [d] = parseLspci(text, 'x');
    expect({ driver: d!.driver, group: d!.group, numa: d!.numaNode }).toEqual({ driver: 'pcieport', group: '7', numa: 1 });
    expect(d!.extCaps.map((c) => [c.offset, c.name])).toEqual([
      [0x100, 'Advanced Error Reporting'],
      [0x140, 'Access Control Services'],
    ]);
  });
});

describe('synthesized extended config (dump stopped at 256 bytes)', () => {
  it('reproduces the real extended capabilities of every 4 KiB dump from its decoded text', () => {
    const realdata = path.join(sharedDir(), 'realdata');
    let compared = 0;
    for (const m of fs.readdirSync(realdata).filter((d) => d.startsWith('nvbugreport-'))) {
      const file = path.join(realdata, m, 'lspci-nnDvvvxxxx.txt');
      if (!fs.existsSync(file)) continue;
      for (const d of parseLspci(fs.readFileSync(file, 'utf8'), file)) {
        if (d.config.length !== 4096 || d.extCaps.length === 0) continue;
        const real = parseConfigSpace(d.config);
        const synth = parseConfigSpace(synthesizeExtended(d.config.subarray(0, 256), d.extCaps).config);
        const view = (cs: typeof real) => ({
          bdf: d.bdf,
          ext: cs.extCapabilities.map((c) => [c.id, c.offset, c.version]),
          acs: cs.acs ? [cs.acs.cap & 0x7f, cs.acs.ctrl & 0x7f] : null,
          ari: cs.ari?.nextFunction ?? null,
          sriov: cs.sriov ? [cs.sriov.totalVfs, cs.sriov.numVfs, cs.sriov.firstVfOffset, cs.sriov.vfStride, cs.sriov.vfDeviceId, cs.sriov.vfEnabled] : null,
        });
        expect(view(synth)).toEqual(view(real));
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(100);
  });

  it('makes ACS known to the scanner and records the device in meta/import.json', () => {
    const text =
      block('0000:00:01.1', rootPort.subarray(0, 256), [
        'Capabilities: [100 v1] Advanced Error Reporting',
        'Capabilities: [140 v1] Access Control Services',
        '\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans+',
        '\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd- EgressCtrl- DirectTrans-',
      ]) + block('0000:01:00.0', upstream.subarray(0, 256));
    const out = path.join(tmpDir(), 'root');
    const result = importLspci({ text, name: 'crafted.txt' }, out);
    expect(result.devices.map((d) => [d.bdf, d.synthesizedExtended, d.configSize])).toEqual([
      ['0000:00:01.1', true, 4096],
      ['0000:01:00.0', false, 256],
    ]);
    const snap = scan({ root: out, pciIds: null });
    const rp = snap.devices.get('0000:00:01.1' as never)!;
    expect(rp.acs).toMatchObject({ offset: 0x140, cap: 0x5f, ctrl: 0x0d, ctrlBits: ['SV', 'RR', 'CR'] });
    expect(rp.acsKnown).toBe(true);
    const up = snap.devices.get('0000:01:00.0' as never)!;
    expect(up.acsKnown).toBe(false); // 256 bytes and nothing decoded: ACS unknown, reported
    expect(up.problems.map((p) => p.code)).toContain('short-config');
    const meta = JSON.parse(fs.readFileSync(path.join(out, 'meta/import.json'), 'utf8'));
    expect(meta.synthesizedExtended.map((s: { bdf: string }) => s.bdf)).toEqual(['0000:00:01.1']);
    expect(meta.source).toBe('crafted.txt');
  });
});

describe('synthesized extended config with a capability lspci named but we cannot map', () => {
  it('keeps the chain whole (ACS behind it is still found) and reports the name', () => {
    const text = block('0000:00:01.1', rootPort.subarray(0, 256), [
      'Capabilities: [100 v1] Some Future Capability <?>',
      'Capabilities: [140 v1] Access Control Services',
      '\tACSCap:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-',
      '\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-',
    ]);
    const out = path.join(tmpDir(), 'root');
    const r = importLspci({ text }, out);
    expect(r.problems.map((p) => p.code)).toEqual(['unknown-ext-cap']);
    const d = scan({ root: out, pciIds: null }).devices.get('0000:00:01.1' as never)!;
    expect(d.extCapabilities.map((c) => [c.id, c.offset])).toEqual([
      [0, 0x100],
      [0x0d, 0x140],
    ]);
    expect(d.acs?.ctrlBits).toEqual(['SV', 'RR', 'CR', 'UF']);
  });
});

describe('topology, groups and units', () => {
  it('builds the tree from secondary bus numbers across root buses and domains', () => {
    const rp2 = buildConfig({
      vendor: 0x8086,
      device: 0x2030,
      classCode: 0x060400,
      bridge: true,
      primary: 0x80,
      secondary: 0x81,
      subordinate: 0x81,
      pcieType: 4,
    });
    const text =
      block('0000:00:01.1', rootPort) +
      block('0000:01:00.0', upstream) +
      block('0000:02:00.0', endpoint) +
      block('0000:80:02.0', rp2) +
      block('0000:81:00.0', endpoint) +
      block('0001:00:00.0', endpoint) +
      block('0000:00:1f.0', buildConfig({ vendor: 0x8086, device: 0xa305, classCode: 0x060100 }));
    const out = path.join(tmpDir(), 'root');
    importLspci({ text }, out);
    const snap = scan({ root: out, pciIds: null });
    const where = (b: string) => {
      const d = snap.devices.get(b as never)!;
      return [d.parent, d.rootBus];
    };
    expect(where('0000:02:00.0')).toEqual(['0000:01:00.0', 'pci0000:00']);
    expect(where('0000:01:00.0')).toEqual(['0000:00:01.1', 'pci0000:00']);
    expect(where('0000:81:00.0')).toEqual(['0000:80:02.0', 'pci0000:80']);
    expect(where('0000:80:02.0')).toEqual([null, 'pci0000:80']);
    expect(where('0001:00:00.0')).toEqual([null, 'pci0001:00']);
    expect(where('0000:00:1f.0')).toEqual([null, 'pci0000:00']);
  });

  it('ignores a bridge whose secondary bus is not above its own (no loops), and says so', () => {
    const bad = buildConfig({ vendor: 1, device: 2, classCode: 0x060400, bridge: true, primary: 3, secondary: 3, subordinate: 3, pcieType: 6 });
    const result = importLspci({ text: block('0000:03:00.0', bad) }, path.join(tmpDir(), 'root'));
    expect(result.devices[0]!.parent).toBeNull();
    expect(result.problems.map((p) => p.code)).toEqual(['bridge-bus-order']);
  });

  it('links enabled SR-IOV VFs to their PF (offset and stride)', () => {
    const pf = buildConfig({
      vendor: 0x8086,
      device: 0x1572,
      classCode: 0x020000,
      pcieType: 0,
      ari: { nextFunction: 0 },
      sriov: { total: 8, num: 2, offset: 0x10, stride: 1, vfDevice: 0x154c },
    });
    const vf = buildConfig({ vendor: 0x8086, device: 0x154c, classCode: 0x020000, pcieType: 0 });
    const out = path.join(tmpDir(), 'root');
    importLspci({ text: block('0000:05:00.0', pf) + block('0000:05:02.0', vf) + block('0000:05:02.1', vf) }, out);
    const snap = scan({ root: out, pciIds: null });
    expect(snap.devices.get('0000:05:00.0' as never)!.virtfns).toEqual(['0000:05:02.0', '0000:05:02.1']);
    expect(snap.devices.get('0000:05:02.1' as never)!.physfn).toBe('0000:05:00.0');
  });

  it('gives grouped devices ivhd0 only when one AMD IOMMU function is in the dump', () => {
    const amdIommu = buildConfig({ vendor: 0x1022, device: 0x1481, classCode: 0x080600 });
    const text =
      block('0000:00:00.2', amdIommu) +
      block('0000:00:01.1', rootPort, ['IOMMU group: 3', 'Kernel driver in use: pcieport']) +
      block('0000:01:00.0', endpoint, ['IOMMU group: 4']);
    const out = path.join(tmpDir(), 'root');
    const r = importLspci({ text }, out);
    expect(r.iommuUnit).toBe('ivhd0');
    expect(r.groups).toEqual({ '3': ['0000:00:01.1'], '4': ['0000:01:00.0'] });
    const snap = scan({ root: out, pciIds: null });
    expect([...snap.devices.values()].map((d) => [d.bdf, d.iommu, d.kernelGroup])).toEqual([
      ['0000:00:00.2', null, null],
      ['0000:00:01.1', 'ivhd0', '3'],
      ['0000:01:00.0', 'ivhd0', '4'],
    ]);
    const second = block('0000:40:00.2', amdIommu);
    expect(importLspci({ text: text + second }, path.join(tmpDir(), 'root')).iommuUnit).toBeNull();
    const intel = text.replace('00:00.2 Device [0000]: Crafted [1022:1481]', '00:00.2 Device [0000]: Crafted [8086:1481]');
    const intelBytes = intel.replace(/^00: 22 10/m, '00: 86 80');
    expect(importLspci({ text: intelBytes }, path.join(tmpDir(), 'root')).iommuUnit).toBeNull();
  });

  it('refuses a non-empty output directory and leaves nothing behind on error', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'keep'), 'x');
    expectInvalid(() => importLspci({ text: block('0000:00:00.0', endpoint) }, dir), /exists and is not an empty directory/);
    const out = path.join(tmpDir(), 'root');
    expectInvalid(() => importLspci({ text: `${block('0000:00:00.0', endpoint)}garbage\n` }, out), /:\d+: "garbage"/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(path.dirname(out))).toEqual([]);
  });
});

describe('CLI: import lspci', () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    return { out, err, io: { stdout: (t: string) => out.push(t), stderr: (t: string) => err.push(t) } };
  };

  it('writes a root that `devices --root` reads back', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'lspci.txt');
    fs.writeFileSync(file, block('0000:00:01.1', rootPort, ['Kernel driver in use: pcieport']) + block('0000:01:00.0', upstream));
    const a = io();
    expect(await runCli(['import', 'lspci', file, '--out', path.join(dir, 'root'), '--json'], a.io)).toBe(0);
    expect(JSON.parse(a.out.join('')).devices).toHaveLength(2);
    const b = io();
    expect(await runCli(['--root', path.join(dir, 'root'), 'devices', '--json'], b.io)).toBe(0);
    expect(JSON.parse(b.out.join('')).devices.map((d: { bdf: string; driver: string | null }) => [d.bdf, d.driver])).toEqual([
      ['0000:00:01.1', 'pcieport'],
      ['0000:01:00.0', null],
    ]);
  });

  it('exits 1 with E_INVALID_INPUT naming file and line for a bad dump, 2 without --out', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'bad.txt');
    fs.writeFileSync(file, '0000:00:00.0 X\n00: 12\n');
    const a = io();
    expect(await runCli(['import', 'lspci', file, '--out', path.join(dir, 'root')], a.io)).toBe(1);
    expect(a.err.join('')).toContain(`E_INVALID_INPUT: ${file}:2:`);
    const b = io();
    expect(await runCli(['import', 'lspci', file], b.io)).toBe(2);
  });
});
