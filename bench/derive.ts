import * as path from 'node:path';
import { execaSync } from 'execa';
import { writeFixtureRoot } from '../capture/fixture-writer.js';
import { deriveGroups } from '../groups/derive.js';
import { PCI_BUS } from '../sysfs/paths.js';
import { NodeSysfsPort } from '../sysfs/port.js';
import { scanHost } from '../sysfs/scan.js';
import { generateHost } from './generate.js';
import type { BenchContext, BenchModule } from './types.js';

// Group derivation on the synthetic roots of the scan benchmark (bench/generate.ts): scan + derive
// (mainline, and the acs-rework rules) next to lspci on the same tree, and the growth from the
// smallest to the largest size (linear = the ratio of device counts).

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const runs = (n: number): number => (n >= 10_000 ? 3 : 5);

const timeMedian = (n: number, fn: () => unknown): number => {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(ms(t0));
  }
  return median(times);
};

const haveLspci = (): boolean => execaSync('sh', ['-c', 'command -v lspci'], { reject: false }).exitCode === 0;

export const deriveBench: BenchModule = {
  name: 'derive',
  description: 'derive IOMMU groups (mainline and acs-rework) on synthetic roots; scan+derive next to lspci',
  run(ctx: BenchContext) {
    const lspci = haveLspci();
    if (!lspci) ctx.log('lspci missing: no comparison column (the scan benchmark installs pciutils when it may)');
    const rows: (string | number)[][] = [];
    const totals: { devices: number; derive: number; total: number }[] = [];
    for (const size of ctx.sizes) {
      const root = path.join(ctx.workDir, `host-${size}`);
      const spec = generateHost(size);
      writeFixtureRoot(root, spec);
      const port = new NodeSysfsPort(root);
      const snap = scanHost(port, { pciIds: null }); // warm-up, and the snapshot the derivations use
      const scanMs = timeMedian(runs(size), () => scanHost(port, { pciIds: null }));
      const groups = deriveGroups(snap).groups.length;
      const deriveMs = timeMedian(runs(size), () => deriveGroups(snap));
      const reworkMs = timeMedian(runs(size), () => deriveGroups(snap, { rules: 'acs-rework' }));
      let lspciMs: number | null = null;
      if (lspci) {
        const args = ['-A', 'linux-sysfs', '-O', `sysfs.path=${root}/${PCI_BUS}`, '-nnDvmm'];
        execaSync('lspci', args, { maxBuffer: 1 << 30 });
        lspciMs = timeMedian(runs(size), () => execaSync('lspci', args, { maxBuffer: 1 << 30 }));
      }
      const total = scanMs + deriveMs;
      totals.push({ devices: snap.devices.size, derive: deriveMs, total });
      rows.push([
        snap.devices.size,
        groups,
        scanMs.toFixed(1),
        deriveMs.toFixed(1),
        reworkMs.toFixed(1),
        total.toFixed(1),
        lspciMs === null ? '-' : lspciMs.toFixed(1),
        lspciMs === null ? '-' : (total / lspciMs).toFixed(2),
        ((deriveMs / snap.devices.size) * 1000).toFixed(1),
      ]);
    }
    ctx.table(['devices', 'groups', 'scan ms', 'derive ms', 'rework ms', 'scan+derive ms', 'lspci ms', '(scan+derive)/lspci', 'derive us/device'], rows);
    if (totals.length >= 2) {
      const [a, b] = [totals[0]!, totals[totals.length - 1]!];
      ctx.log(
        `growth ${a.devices} -> ${b.devices} devices (x${(b.devices / a.devices).toFixed(1)}): derive x${(b.derive / a.derive).toFixed(1)}, scan+derive x${(b.total / a.total).toFixed(1)}`,
      );
    }
  },
};
