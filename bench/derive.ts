import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { scan } from '../api/devices.js';
import { deriveGroups } from '../groups/derive.js';
import { writeFixtureRoot, type FixtureDeviceSpec } from '../sysfs/fixture-writer.js';
import { formatBdf } from '../sysfs/bdf.js';
import { buildConfig } from './config-builder.js';

// Benchmark: derive IOMMU groups on synthetic roots of 1k and 10k devices (root ports with and
// without ACS in multifunction slots, switches whose downstream ports lack ACS, PCIe-to-PCI
// bridges with conventional devices, multifunction endpoints), timing scan, derive (both rule
// sets) and lspci on the same tree. Growth 1k -> 10k should be linear (ratio ~10).

const ACS_FULL = { cap: 0x1f, ctrl: 0x1f };

/** A realistic synthetic tree of about `count` PCI functions, spread over PCI domains as buses run out. */
export const syntheticDevices = (count: number): FixtureDeviceSpec[] => {
  const out: FixtureDeviceSpec[] = [];
  const bdf = (domain: number, bus: number, device: number, fn: number): string => formatBdf({ domain, bus, device, fn });
  let domain = 0;
  let nextBus = 1;
  let slot = 1;
  let fn = 0;
  let kind = 0;
  const newDomain = (): void => {
    domain++;
    nextBus = 1;
    slot = 1;
    fn = 0;
  };
  out.push({ bdf: bdf(0, 0, 0, 0), config: buildConfig({ vendor: 0x1b36, device: 0x0008, classCode: 0x060000 }) });
  while (out.length < count) {
    if (nextBus > 240 || slot > 0x1f) newDomain();
    if (fn === 0 && domain > 0 && slot === 1) out.push({ bdf: bdf(domain, 0, 0, 0), config: buildConfig({ vendor: 0x1b36, device: 0x0008, classCode: 0x060000 }) });
    const rpBdf = bdf(domain, 0, slot, fn);
    const acsOn = kind % 3 !== 0;
    const sub = kind % 4;
    const firstBus = nextBus;
    const busesNeeded = sub === 1 ? 6 : 1;
    out.push({
      bdf: rpBdf,
      config: buildConfig({ vendor: 0x1b36, device: 0x000c, classCode: 0x060400, bridge: true, multifunction: fn === 0, primary: 0, secondary: firstBus, subordinate: firstBus + busesNeeded - 1, pcieType: 4, ...(acsOn ? { acs: ACS_FULL } : {}) }),
      driver: 'pcieport',
    });
    if (sub === 0) {
      // Multifunction endpoint without ACS (e.g. a GPU with its audio function).
      for (let f = 0; f < 2; f++) out.push({ bdf: bdf(domain, firstBus, 0, f), parent: rpBdf, config: buildConfig({ vendor: 0x10de, device: 0x2204 + f, classCode: f ? 0x040300 : 0x030000, multifunction: true, pcieType: 0 }), driver: f ? 'snd_hda_intel' : 'nvidia' });
    } else if (sub === 1) {
      const usp = bdf(domain, firstBus, 0, 0);
      out.push({ bdf: usp, parent: rpBdf, config: buildConfig({ vendor: 0x10b5, device: 0x8747, classCode: 0x060400, bridge: true, primary: firstBus, secondary: firstBus + 1, subordinate: firstBus + 5, pcieType: 5 }), driver: 'pcieport' });
      for (let p = 0; p < 4; p++) {
        const dsp = bdf(domain, firstBus + 1, p, 0);
        out.push({ bdf: dsp, parent: usp, config: buildConfig({ vendor: 0x10b5, device: 0x8747, classCode: 0x060400, bridge: true, primary: firstBus + 1, secondary: firstBus + 2 + p, subordinate: firstBus + 2 + p, pcieType: 6 }), driver: 'pcieport' });
        out.push({ bdf: bdf(domain, firstBus + 2 + p, 0, 0), parent: dsp, config: buildConfig({ vendor: 0x144d, device: 0xa808, classCode: 0x010802, pcieType: 0 }), driver: 'nvme' });
      }
    } else if (sub === 2) {
      const br = bdf(domain, firstBus, 0, 0);
      out.push({ bdf: br, parent: rpBdf, config: buildConfig({ vendor: 0x1b36, device: 0x000e, classCode: 0x060400, bridge: true, primary: firstBus, secondary: firstBus + 1, subordinate: firstBus + 1, pcieType: 7 }) });
      for (let d = 1; d <= 3; d++) out.push({ bdf: bdf(domain, firstBus + 1, d, 0), parent: br, config: buildConfig({ vendor: 0x8086, device: 0x100e, classCode: 0x020000 }), driver: 'e1000' });
      nextBus++;
    } else {
      out.push({ bdf: bdf(domain, firstBus, 0, 0), parent: rpBdf, config: buildConfig({ vendor: 0x8086, device: 0x1533, classCode: 0x020000, pcieType: 0 }), driver: 'igb' });
    }
    nextBus += busesNeeded;
    kind++;
    fn++;
    if (fn === 8) {
      fn = 0;
      slot++;
    }
  }
  return out;
};

export interface DeriveBenchRow {
  devices: number;
  scanMs: number;
  deriveMs: number;
  reworkMs: number;
  groups: number;
  lspciMs: number | null;
}

const time = <T>(fn: () => T): [T, number] => {
  const t0 = performance.now();
  const v = fn();
  return [v, performance.now() - t0];
};

const lspciMs = async (root: string): Promise<number | null> => {
  try {
    const t0 = performance.now();
    await execa('lspci', ['-A', 'linux-sysfs', '-O', `sysfs.path=${path.join(root, 'sys/bus/pci')}`, '-nnDvmm'], { stdout: 'ignore' });
    return performance.now() - t0;
  } catch {
    return null;
  }
};

export const runDeriveBench = async (sizes: number[] = [1000, 10000]): Promise<DeriveBenchRow[]> => {
  const rows: DeriveBenchRow[] = [];
  for (const n of sizes) {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), `isogroup-bench-derive-${n}-`));
    try {
      const devices = syntheticDevices(n);
      writeFixtureRoot(root, { devices });
      const [snap, scanMs] = time(() => scan({ root, pciIds: null }));
      const [grouping, deriveMs] = time(() => deriveGroups(snap));
      const [, reworkMs] = time(() => deriveGroups(snap, { rules: 'acs-rework' }));
      rows.push({ devices: snap.devices.size, scanMs, deriveMs, reworkMs, groups: grouping.groups.length, lspciMs: await lspciMs(root) });
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
  return rows;
};

export const formatDeriveBench = (rows: DeriveBenchRow[]): string => {
  const lines = ['derive: devices  groups  scan ms  derive ms  rework ms  scan+derive ms  lspci ms  (scan+derive)/lspci'];
  for (const r of rows) {
    const total = r.scanMs + r.deriveMs;
    lines.push(
      `        ${String(r.devices).padStart(7)}  ${String(r.groups).padStart(6)}  ${r.scanMs.toFixed(0).padStart(7)}  ${r.deriveMs.toFixed(1).padStart(9)}  ${r.reworkMs.toFixed(1).padStart(9)}  ${total.toFixed(0).padStart(14)}  ${r.lspciMs === null ? '      -' : r.lspciMs.toFixed(0).padStart(8)}  ${r.lspciMs === null ? '-' : (total / r.lspciMs).toFixed(2)}`,
    );
  }
  if (rows.length >= 2) {
    const [a, b] = [rows[0]!, rows[rows.length - 1]!];
    const scale = b.devices / a.devices;
    lines.push(`        growth x${scale.toFixed(1)} devices: derive x${(b.deriveMs / a.deriveMs).toFixed(1)}, scan+derive x${((b.scanMs + b.deriveMs) / (a.scanMs + a.deriveMs)).toFixed(1)} (linear = x${scale.toFixed(1)})`);
  }
  return lines.join('\n');
};

/** Entry for bench/run.ts: run and print. */
export const bench = async (): Promise<void> => {
  process.stdout.write(`${formatDeriveBench(await runDeriveBench())}\n`);
};

if (process.argv[1] && path.resolve(process.argv[1]).replace(/\.ts$/, '.js') === path.resolve(new URL(import.meta.url).pathname).replace(/\.ts$/, '.js')) {
  await bench();
}
