import * as fs from 'node:fs';
import * as path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/paths.js';
import { simCopy } from '../helpers/sim-root.js';

// The daemon and the commands that talk to it as separate processes (bin/isogroup), sharing one
// fixture kernel: what an operator rehearsing on a capture does.
const bin = path.join(repoRoot, 'bin/isogroup');
const children: ResultPromise[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    c.kill('SIGKILL');
    await c.catch(() => undefined);
  }
});

const run = (args: string[]) => execa(bin, args, { reject: false, timeout: 20_000 });

// Returns the child inside an object: an execa child is itself a promise, and returning it from an
// async function would wait for the daemon to exit.
const startDaemon = async (root: string): Promise<{ child: ResultPromise }> => {
  const child = execa(bin, ['daemon', '--root', root, '--simulate', '--rescan-ms', '500', '--log-format', 'json'], { reject: false });
  children.push(child);
  const socket = path.join(root, '.isogroup-sim/isogroup.sock');
  await expect.poll(() => fs.existsSync(socket), { timeout: 30_000, interval: 100 }).toBe(true);
  return { child };
};

describe('daemon + CLI as processes', () => {
  it('assign goes through the running daemon and is held; a hot-add lands on vfio-pci; SIGTERM releases nothing; a restart holds again', async () => {
    const sim = simCopy('mixed');
    const { child: daemon } = await startDaemon(sim.root);
    const assign = await run(['assign', '22', '--to', 'alice', '--root', sim.root, '--simulate', '--json']);
    expect(assign.exitCode, assign.stderr).toBe(0);
    expect(JSON.parse(assign.stdout)).toMatchObject({ groupId: '22', owner: 'alice', via: 'daemon', held: true });
    expect(assign.stderr).not.toMatch(/nobody holds/);

    const add = await run([
      'sim',
      'add-device',
      '--root',
      sim.root,
      '--simulate',
      '--bridge',
      '0000:09:00.0',
      '--vendor',
      '8086',
      '--device',
      '100e',
      '--driver',
      'e1000',
      '--json',
    ]);
    expect(add.exitCode, add.stderr).toBe(0);
    const added = JSON.parse(add.stdout) as { bdf: string; driver: string | null };
    expect(added.driver).toBeNull(); // the held group refused e1000 (EBUSY)
    await expect.poll(() => sim.kernel.driverOf(added.bdf), { timeout: 15_000 }).toBe('vfio-pci');

    const held = await run(['status', '--root', sim.root, '--simulate', '--json']);
    expect(JSON.parse(held.stdout)).toMatchObject({ via: 'daemon', groups: [expect.objectContaining({ id: '22', owner: 'alice', held: true })] });

    daemon.kill('SIGTERM');
    const ended = await daemon;
    expect(ended.exitCode).toBe(0);
    expect(ended.stderr).toMatch(/assignments stay in the journal/);
    const after = await run(['status', '--root', sim.root, '--simulate', '--json']);
    expect(JSON.parse(after.stdout)).toMatchObject({ via: 'direct', groups: [expect.objectContaining({ id: '22', held: false })] });
    expect(sim.kernel.driverOf(added.bdf)).toBe('vfio-pci');

    await startDaemon(sim.root);
    await expect
      .poll(async () => JSON.parse((await run(['status', '--root', sim.root, '--simulate', '--json'])).stdout).groups[0]?.held, { timeout: 15_000 })
      .toBe(true);
    const rel = await run(['release', '22', '--root', sim.root, '--simulate', '--json']);
    expect(rel.exitCode, rel.stderr).toBe(0);
    expect(JSON.parse(rel.stdout)).toMatchObject({ via: 'daemon', groupId: '22' });
    // Every endpoint is back on its host driver, the hot-added one included (journaled as hot-added).
    expect(sim.kernel.driverOf('0000:0a:01.0')).toBe('e1000');
    expect({ bdf: added.bdf, driver: sim.kernel.driverOf(added.bdf), override: sim.kernel.overrideOf(added.bdf) }).toEqual({
      bdf: added.bdf,
      driver: 'e1000',
      override: null,
    });
  }, 180_000);

  it('assign without a daemon warns that nobody holds the group', async () => {
    const sim = simCopy('mixed');
    const r = await run(['assign', '23', '--root', sim.root, '--simulate']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/nobody holds group 23/);
  });
});
