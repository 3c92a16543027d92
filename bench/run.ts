import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { deriveBench } from './derive.js';
import { hotplugBench } from './hotplug.js';
import { scanBench } from './scan-bench.js';
import type { BenchModule } from './types.js';

// `npm run bench`: runs each benchmark module in turn. A module exports { name, description, run(ctx) };
// add new ones (group derivation, hotplug ...) to BENCHES. Options: --only NAME[,NAME], --sizes 100,1000,10000,
// --keep (leave the generated roots), ISOGROUP_BENCH_DIR (where roots are written; default a tmpfs).

export const BENCHES: BenchModule[] = [scanBench, deriveBench, hotplugBench];

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};

// Prefer a tmpfs: a 10,000-device root is ~300,000 files, and a disk-backed /tmp measures the disk.
const scratchBase = (): string => {
  if (process.env.ISOGROUP_BENCH_DIR) return process.env.ISOGROUP_BENCH_DIR;
  try {
    fs.accessSync('/dev/shm', fs.constants.W_OK);
    return '/dev/shm';
  } catch {
    return os.tmpdir();
  }
};

const printTable = (headers: string[], rows: (string | number)[][]): void => {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  for (const r of cells) console.log(r.map((c, i) => c.padStart(i === 0 ? 0 : widths[i]!).padEnd(i === 0 ? widths[i]! : 0)).join('  '));
};

const main = async (): Promise<void> => {
  const only = arg('--only')?.split(',');
  const sizes = (arg('--sizes') ?? '100,1000,10000')
    .split(',')
    .map((s) => parseInt(s, 10))
    .filter((n) => n > 0);
  const keep = process.argv.includes('--keep');
  const modules = BENCHES.filter((b) => !only || only.includes(b.name));
  if (modules.length === 0) throw new Error(`no benchmark named ${only?.join(',')}; have ${BENCHES.map((b) => b.name).join(', ')}`);
  console.log(
    `isogroup bench: node ${process.version}, ${os.cpus().length} cpu(s) ${os.cpus()[0]?.model ?? ''}, load ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  for (const mod of modules) {
    const workDir = fs.mkdtempSync(path.join(scratchBase(), `isogroup-bench-${mod.name}-`));
    console.log(`\n== ${mod.name}: ${mod.description}\n   (roots in ${workDir})`);
    try {
      await mod.run({ workDir, sizes, log: (l) => console.log(l), table: printTable });
    } finally {
      if (!keep) fs.rmSync(workDir, { recursive: true, force: true });
    }
  }
};

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
