import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

// Importing and scanning a 140-device machine reads thousands of files; give slow, shared CI room.
const SLOW = 120_000;

import { importLspci } from '../../api/capture.js';
import { scan } from '../../api/read.js';
import type { HostSnapshot } from '../../model/device.js';
import { sharedDir } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

// Every real machine in shared/realdata that has config space imports and loads; expectations are
// read from the dump itself (header lines, hex rows, "Kernel driver in use") and from iommu_groups.tsv,
// with a deliberately simpler reader than the importer, never from numbers copied into the test.

const realdata = path.join(sharedDir(), 'realdata');
const machines = fs
  .readdirSync(realdata)
  .filter((d) => /^(nvbugreport|pciutils)-/.test(d))
  .sort();

interface Expected {
  bdf: string;
  vendor: string;
  device: string;
  driver: string | null;
  hex: number[];
}

const HEADER = /^((?:[0-9a-f]{4,8}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) /;

const readDump = (file: string): Expected[] => {
  const out: Expected[] = [];
  for (const block of fs.readFileSync(file, 'utf8').split(/\n(?=(?:[0-9a-f]{4,8}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] )/)) {
    const lines = block.split('\n');
    const m = HEADER.exec(lines[0]!);
    if (!m) continue;
    const bdf = m[1]!.split(':').length === 2 ? `0000:${m[1]}` : m[1]!;
    const hex = lines
      .filter((l) => /^[0-9a-f]{2,3}: /.test(l))
      .flatMap((l) =>
        l
          .slice(l.indexOf(':') + 2)
          .trim()
          .split(' ')
          .map((x) => parseInt(x, 16)),
      );
    const driver = lines.map((l) => /^\tKernel driver in use: (\S+)/.exec(l)?.[1]).find((x) => x !== undefined) ?? null;
    const hx = (o: number): string => `0x${((hex[o + 1]! << 8) | hex[o]!).toString(16).padStart(4, '0')}`;
    out.push({ bdf, vendor: hx(0), device: hx(2), driver, hex });
  }
  return out;
};

const readGroupsTsv = (file: string): Map<string, string | null> => {
  const out = new Map<string, string | null>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const [group, bdf] = line.split('\t');
    out.set(bdf!, group === '-' ? null : group!);
  }
  return out;
};

// Top-level buses of `lspci -tv`: "-[0000:00]-" / "+-[10000:00]-" at the start of a line.
const treeRootBuses = (file: string): string[] =>
  fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => /^[ +\\-]*\[([0-9a-f]{4,8}:[0-9a-f]{2})\]/.exec(l)?.[1])
    .filter((x): x is string => x !== undefined)
    .map((b) => `pci${b}`)
    .sort();

describe.each(machines)('%s', (machine) => {
  const dir = path.join(realdata, machine);
  const dumpFile = path.join(dir, fs.readdirSync(dir).find((f) => /^lspci-nnDvvvx+\.txt$|\.lspci-x\.txt$/.test(f))!);
  const expected = readDump(dumpFile);
  let snap: HostSnapshot;
  const load = (): HostSnapshot => {
    if (!snap) {
      const out = path.join(tmpDir(), 'root');
      importLspci(dumpFile, out);
      snap = scan({ root: out, pciIds: null });
    }
    return snap;
  };

  it(
    'imports every function with its ids and driver',
    () => {
      const s = load();
      expect(expected.length).toBeGreaterThan(0);
      expect([...s.devices.keys()].sort()).toEqual(expected.map((e) => e.bdf).sort());
      for (const e of expected) {
        const d = s.devices.get(e.bdf as never)!;
        expect({ bdf: e.bdf, vendor: d.vendor, device: d.device, driver: d.driver }).toEqual({
          bdf: e.bdf,
          vendor: e.vendor,
          device: e.device,
          driver: e.driver,
        });
      }
      expect(s.problems).toEqual([]);
    },
    SLOW,
  );

  it(
    'keeps the dumped config bytes exactly',
    () => {
      const s = load();
      for (const e of expected) {
        const bytes = s.config.get(e.bdf as never)!;
        expect(Buffer.from(bytes.subarray(0, e.hex.length)).equals(Buffer.from(e.hex)), e.bdf).toBe(true);
        const derived = path.join(dir, 'config', `${e.bdf}.config`);
        if (fs.existsSync(derived)) expect(Buffer.from(bytes.subarray(0, e.hex.length)).equals(fs.readFileSync(derived)), e.bdf).toBe(true);
      }
    },
    SLOW,
  );

  it(
    "places every device under the bridge whose secondary bus it sits on, with the dump's root buses",
    () => {
      const s = load();
      for (const d of s.devices.values()) {
        if (d.parent === null) continue;
        const p = s.devices.get(d.parent)!;
        expect({ bdf: d.bdf, sec: p.secondaryBus, dom: p.domain }).toEqual({ bdf: d.bdf, sec: d.bus, dom: d.domain });
      }
      const tree = path.join(dir, 'lspci-nntv.txt');
      if (fs.existsSync(tree)) {
        // A root bus with only an empty bridge below it still shows in the tree; compare those we hold devices on.
        expect([...new Set([...s.devices.values()].map((d) => d.rootBus))].sort()).toEqual(treeRootBuses(tree));
      }
    },
    SLOW,
  );

  it(
    'has the kernel groups of iommu_groups.tsv',
    () => {
      const tsv = path.join(dir, 'iommu_groups.tsv');
      if (!fs.existsSync(tsv)) {
        expect(load().kernelGroups.size).toBe(0);
        return;
      }
      const groups = readGroupsTsv(tsv);
      const s = load();
      expect(groups.size).toBe(s.devices.size);
      for (const [bdf, group] of groups) expect({ bdf, group: s.devices.get(bdf as never)!.kernelGroup }).toEqual({ bdf, group });
      expect(s.kernelGroups.size).toBe(new Set([...groups.values()].filter((g) => g !== null)).size);
    },
    SLOW,
  );
});

describe('machines whose dump stops at 256 bytes', () => {
  it(
    'get ACS from the decoded ACSCtl lines (Lambda WRX80, cis-a6000)',
    () => {
      const dir = path.join(realdata, 'nvbugreport-lambda-wrx80e-sage-cis-a6000');
      const text = fs.readFileSync(path.join(dir, 'lspci-nnDvvvxxx.txt'), 'utf8');
      const out = path.join(tmpDir(), 'root');
      importLspci(path.join(dir, 'lspci-nnDvvvxxx.txt'), out);
      const s = scan({ root: out, pciIds: null });
      const blocks = text.split(/\n(?=[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] )/);
      let withAcs = 0;
      for (const block of blocks) {
        const bdf = block.slice(0, 12);
        const ctl = /ACSCtl:\t(.*)/.exec(block)?.[1];
        const d = s.devices.get(bdf as never)!;
        if (ctl === undefined) {
          expect(d.acs, bdf).toBeNull();
          continue;
        }
        withAcs++;
        const on = ['SrcValid', 'TransBlk', 'ReqRedir', 'CmpltRedir', 'UpstreamFwd', 'EgressCtrl', 'DirectTrans'].filter((w) => ctl.includes(`${w}+`));
        const names: Record<string, string> = {
          SrcValid: 'SV',
          TransBlk: 'TB',
          ReqRedir: 'RR',
          CmpltRedir: 'CR',
          UpstreamFwd: 'UF',
          EgressCtrl: 'EC',
          DirectTrans: 'DT',
        };
        expect({ bdf, bits: d.acs?.ctrlBits }).toEqual({ bdf, bits: on.map((w) => names[w]) });
        expect(d.acsKnown).toBe(true);
      }
      expect(withAcs).toBeGreaterThan(0);
      const meta = JSON.parse(fs.readFileSync(path.join(out, 'meta/import.json'), 'utf8')) as { synthesizedExtended: { bdf: string }[] };
      expect(meta.synthesizedExtended.map((x) => x.bdf)).toContain('0000:20:01.1');
    },
    SLOW,
  );
});

describe('the Intel VMD domain (Dell Precision 5820)', () => {
  it(
    'sits below the VMD endpoint, whose root bus is pci10000:00',
    () => {
      const out = path.join(tmpDir(), 'root');
      importLspci(path.join(realdata, 'nvbugreport-dell-precision-5820', 'lspci-nnDvvvxxxx.txt'), out);
      const s = scan({ root: out, pciIds: null });
      const vmd = [...s.devices.values()].find((d) => d.driver === 'vmd')!;
      const inDomain = [...s.devices.values()].filter((d) => d.domain >= 0x10000);
      expect(inDomain.length).toBeGreaterThan(0);
      for (const d of inDomain) {
        expect(d.sysfsPath.startsWith(`${vmd.sysfsPath}/pci10000:00/`)).toBe(true);
        if (d.parent === null) expect({ rootBus: d.rootBus, host: d.hostBridgeDevice }).toEqual({ rootBus: 'pci10000:00', host: vmd.bdf });
      }
    },
    SLOW,
  );
});

// hwloc-gather-topology trees: real sysfs, but config cut to 64 bytes and no groups.
const hwloc = fs
  .readdirSync(realdata)
  .filter((d) => d.startsWith('hwloc-'))
  .sort();
describe.each(hwloc)('%s (64-byte config)', (machine) => {
  it(
    'loads every device with the ids of its attribute files, and reports the 64-byte config',
    () => {
      const dir = tmpDir();
      const tarball = fs.readdirSync(path.join(realdata, machine)).find((f) => f.endsWith('.tar.bz2'))!;
      // Only the PCI part of the tree (the tarballs hold ~10k files of /proc, cpus, memory...).
      execFileSync('tar', ['xjf', path.join(realdata, machine, tarball), '-C', dir, '--wildcards', '*/sys/bus/pci/*', '*/sys/devices/pci*']);
      const top = fs.readdirSync(dir).find((f) => fs.existsSync(path.join(dir, f, 'sys/bus/pci/devices')))!;
      const root = path.join(dir, top);
      const listed = fs.readdirSync(path.join(root, 'sys/bus/pci/devices')).sort();
      const s = scan({ root, pciIds: null });
      expect([...s.devices.keys()].sort()).toEqual(listed);
      for (const bdf of listed) {
        const d = s.devices.get(bdf as never)!;
        const attr = (n: string): string => fs.readFileSync(path.join(root, 'sys/bus/pci/devices', bdf, n), 'utf8').trim();
        expect({ bdf, vendor: d.vendor, device: d.device, class: d.class }).toEqual({
          bdf,
          vendor: attr('vendor'),
          device: attr('device'),
          class: attr('class'),
        });
        expect(d.configSize).toBe(64);
        expect(d.acsKnown).toBe(false);
        expect(d.portType).toBe('unknown');
        expect(d.problems.map((p) => p.code)).toEqual(['short-config']);
      }
    },
    SLOW,
  );
});

describe('ghw ThinkPad X1 Carbon Gen10 (sysfs without config)', () => {
  it(
    'loads the 23 functions with the groups of their iommu_group links and reports the missing config',
    () => {
      const dir = tmpDir();
      const src = path.join(realdata, 'ghw-lenovo-thinkpad-x1-carbon-gen10');
      execFileSync('tar', ['xzf', path.join(src, fs.readdirSync(src).find((f) => f.endsWith('.tar.gz'))!), '-C', dir]);
      const groups = readGroupsTsv(path.join(src, 'iommu_groups.tsv'));
      const s = scan({ root: dir, pciIds: null });
      expect([...s.devices.keys()].sort()).toEqual([...groups.keys()].sort());
      for (const [bdf, group] of groups) {
        const d = s.devices.get(bdf as never)!;
        expect({ bdf, group: d.kernelGroup }).toEqual({ bdf, group });
        expect(d.configSize).toBe(0);
        expect(d.acsKnown).toBe(false);
        expect(d.problems.map((p) => p.code)).toContain('no-config');
      }
      expect(s.problems.map((p) => p.code)).toEqual(['no-groups-dir']);
    },
    SLOW,
  );
});
