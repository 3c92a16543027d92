import * as path from 'node:path';
import { execaSync } from 'execa';
import { writeFixtureRoot } from '../capture/fixture-writer.js';
import { loadPciIds } from '../os/pci-ids.js';
import { PCI_BUS } from '../sysfs/paths.js';
import { NodeSysfsPort } from '../sysfs/port.js';
import { PARALLEL_MIN_DEVICES, scanHost } from '../sysfs/scan.js';
import { generateHost } from './generate.js';
import type { BenchContext, BenchModule } from './types.js';

// scanHost vs `lspci -A linux-sysfs -O sysfs.path=ROOT/sys/bus/pci -nnDvmm` on the same synthetic root.

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

// pciutils gives the lspci column; install it when missing (as the issue asks), if we may.
const ensureLspci = (log: (l: string) => void): boolean => {
  const have = (): boolean => execaSync('sh', ['-c', 'command -v lspci'], { reject: false }).exitCode === 0;
  if (have()) return true;
  if (process.getuid?.() === 0) {
    log('lspci missing: apt-get install -y pciutils');
    execaSync('sh', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pciutils'], { reject: false, stdio: 'inherit' });
  } else log('lspci missing and not root: run `sudo apt-get install -y pciutils` for the comparison');
  return have();
};

const runs = (n: number): number => (n >= 10_000 ? 3 : 5);

export const scanBench: BenchModule = {
  name: 'scan',
  description: 'scanHost on synthetic roots (root ports, switches, GPUs, SR-IOV NICs, NVMe) next to lspci',
  run(ctx: BenchContext) {
    const lspci = ensureLspci(ctx.log);
    const pciIds = loadPciIds();
    ctx.log(`pci.ids: ${pciIds?.source ?? 'none (names off for both)'}`);
    const rows: (string | number)[][] = [];
    const perSize = new Map<number, { scan: number; lspci: number | null }>();
    for (const size of ctx.sizes) {
      const root = path.join(ctx.workDir, `host-${size}`);
      let t0 = process.hrtime.bigint();
      const spec = generateHost(size);
      writeFixtureRoot(root, spec);
      const writeMs = ms(t0);
      const port = new NodeSysfsPort(root);
      // Warm the page cache (and the JIT) once, then time.
      const warm = scanHost(port, { pciIds });
      if (warm.devices.size !== spec.devices.length) throw new Error(`scan found ${warm.devices.size} of ${spec.devices.length} devices`);
      const problems = [...warm.devices.values()].reduce((n, d) => n + d.problems.length, warm.problems.length);
      if (problems > 0) throw new Error(`scan of the synthetic root reported ${problems} problem(s)`);
      // Alternate scan and lspci runs, so a shared host's slow spells hit both columns alike.
      const args = ['-A', 'linux-sysfs', '-O', `sysfs.path=${root}/${PCI_BUS}`, '-nnDvmm'];
      if (lspci) {
        const first = execaSync('lspci', args, { maxBuffer: 1 << 30 });
        const slots = (first.stdout.match(/^Slot:/gm) ?? []).length;
        if (slots !== spec.devices.length) throw new Error(`lspci saw ${slots} of ${spec.devices.length} devices`);
      }
      const scanTimes: number[] = [];
      const times: number[] = [];
      let scanCpu = 0;
      let threads = 1;
      for (let i = 0; i < runs(size); i++) {
        const cpu0 = process.cpuUsage();
        t0 = process.hrtime.bigint();
        threads = scanHost(port, { pciIds }).scanThreads ?? 1;
        scanTimes.push(ms(t0));
        const cpu = process.cpuUsage(cpu0);
        scanCpu += cpu.user + cpu.system;
        if (lspci) {
          t0 = process.hrtime.bigint();
          execaSync('lspci', args, { maxBuffer: 1 << 30 });
          times.push(ms(t0));
        }
      }
      const scanCpuMs = scanCpu / 1000 / runs(size);
      let lspciMs: number | null = null;
      let lspciCpuMs: number | null = null;
      if (lspci) {
        lspciMs = median(times);
        // CPU time of the lspci processes themselves (bash's `times`: children's user and system).
        const quoted = args.map((a) => `'${a}'`).join(' ');
        const t = execaSync('bash', ['-c', `for i in $(seq ${runs(size)}); do lspci ${quoted} >/dev/null; done; times`]).stdout.split('\n')[1] ?? '';
        const secs = [...t.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => parseInt(m[1]!, 10) * 60 + parseFloat(m[2]!));
        lspciCpuMs = secs.length === 2 ? ((secs[0]! + secs[1]!) * 1000) / runs(size) : null;
      }
      const scanMs = median(scanTimes);
      perSize.set(size, { scan: scanMs, lspci: lspciMs });
      rows.push([
        spec.devices.length,
        threads,
        writeMs.toFixed(0),
        scanMs.toFixed(1),
        lspciMs === null ? '-' : lspciMs.toFixed(1),
        lspciMs === null ? '-' : (scanMs / lspciMs).toFixed(2),
        scanCpuMs.toFixed(0),
        lspciCpuMs === null ? '-' : lspciCpuMs.toFixed(0),
        ((scanMs / spec.devices.length) * 1000).toFixed(1),
      ]);
    }
    ctx.log(
      'ms are medians of wall time, scan and lspci runs alternating; cpu ms is user+system time per run, all threads (the host may be shared, so wall time includes waiting); threads: scan threads (2 from ' +
        PARALLEL_MIN_DEVICES +
        ' devices on; lspci uses 1)',
    );
    ctx.table(['devices', 'threads', 'write ms', 'scan ms', 'lspci ms', 'isogroup/lspci', 'scan cpu ms', 'lspci cpu ms', 'scan us/device'], rows);
    const a = perSize.get(1000);
    const b = perSize.get(10_000);
    if (a && b) {
      ctx.log(
        `growth 1k -> 10k: scan x${(b.scan / a.scan).toFixed(1)}${a.lspci && b.lspci ? `, lspci x${(b.lspci / a.lspci).toFixed(1)}` : ''} (linear = x10)`,
      );
      if (b.lspci !== null)
        ctx.log(`at 10k: isogroup ${b.scan < b.lspci ? 'faster' : 'SLOWER'} than lspci (${b.scan.toFixed(0)} ms vs ${b.lspci.toFixed(0)} ms)`);
    }
  },
};
