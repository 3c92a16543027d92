import * as fs from 'node:fs';
import * as path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/paths.js';
import { simCopy } from '../helpers/sim-root.js';
import { StandInKubelet } from './standin.js';

// `isogroup daemon --kubelet` as a process (the build, its .proto beside it), with `assign --to
// kubernetes` from another process and the stand-in kubelet: what an operator runs on a node.
const bin = path.join(repoRoot, 'bin/isogroup');
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('isogroup daemon --kubelet', () => {
  it('serves the pool to the kubelet, keeps the CDI spec, and stops cleanly on SIGTERM', async () => {
    const sim = simCopy('mixed');
    const dir = path.dirname(sim.root);
    const kubeletDir = path.join(dir, 'kubelet');
    const cdiDir = path.join(dir, 'cdi');
    const kubelet = await StandInKubelet.start(kubeletDir);
    cleanups.push(() => kubelet.close());
    const args = ['--root', sim.root, '--simulate'];
    const daemon: ResultPromise = execa(bin, ['daemon', ...args, '--rescan-ms', '0', '--kubelet', '--kubelet-dir', kubeletDir, '--cdi-dir', cdiDir], {
      reject: false,
    });
    cleanups.push(async () => {
      daemon.kill('SIGKILL');
      await daemon;
    });
    await expect.poll(() => fs.existsSync(path.join(sim.root, '.isogroup-sim/isogroup.sock')), { timeout: 30_000, interval: 100 }).toBe(true);
    const assign = await execa(bin, ['assign', '23', '--to', 'kubernetes', ...args, '--json'], { reject: false, timeout: 30_000 });
    expect(assign.exitCode, assign.stderr).toBe(0);
    expect(JSON.parse(assign.stdout)).toMatchObject({ groupId: '23', via: 'daemon', held: true });
    await expect
      .poll(() => kubelet.connections.get('isogroup.io/8086_10d3')?.latest() ?? null, { timeout: 30_000 })
      .toEqual([{ ID: '23', health: 'Healthy', topology: null }]);
    const spec = path.join(cdiDir, 'isogroup.io.yaml');
    await expect.poll(() => fs.existsSync(spec) && fs.readFileSync(spec, 'utf8').includes('name: "23"'), { timeout: 10_000 }).toBe(true);
    daemon.kill('SIGTERM');
    const done = await daemon;
    expect(done.exitCode, String(done.stderr)).toBe(0);
    expect(fs.existsSync(path.join(kubeletDir, 'isogroup.io_8086_10d3.sock'))).toBe(false);
    // The assignment and the spec stay: the next start serves them again.
    expect(fs.readFileSync(spec, 'utf8')).toMatch(/name: "23"/);
  });

  it('refuses kubelet flags without --kubelet, and a bad resources file before serving anything', async () => {
    const sim = simCopy('mixed');
    const flags = await execa(bin, ['daemon', '--root', sim.root, '--simulate', '--kubelet-owner', 'k8s'], { reject: false, timeout: 20_000 });
    expect(flags.exitCode).toBe(2);
    expect(flags.stderr).toMatch(/need --kubelet/);
    const file = path.join(path.dirname(sim.root), 'resources.yaml');
    fs.writeFileSync(file, 'resources:\n  - name: nic\n    selector: { vendor: "80" }\n');
    const bad = await execa(bin, ['daemon', '--root', sim.root, '--simulate', '--kubelet', '--kubelet-resources', file], { reject: false, timeout: 20_000 });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toMatch(/E_INVALID_INPUT: .*resources\[0\]\.selector\.vendor: expected 4 hex digits/);
  });
});
