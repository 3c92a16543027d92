import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assignGroup } from '../../api/assign.js';
import { recover, releaseGroup } from '../../api/release.js';
import { isIsogroupError } from '../../errors.js';
import { readJournal } from '../../state/journal.js';
import { repoRoot } from '../helpers/paths.js';
import { driverState, simCopy } from '../helpers/sim-root.js';

// Crash sweep: `isogroup assign` in a child process is killed with SIGKILL right after its k-th sysfs
// write (the fixture kernel's ISOGROUP_SIM_KILL_AFTER hook), for every k; `recover` must then bring
// the host back. Also two processes racing for one group.

const bin = path.join(repoRoot, 'bin', 'isogroup');

const runCli = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });

describe('crash sweep (kill -9 after each write, then recover)', () => {
  it.each([
    { group: '23', devices: ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'] },
    { group: '22', devices: ['0000:09:00.0', '0000:0a:01.0', '0000:0a:02.0', '0000:0a:03.0'] },
  ])(
    'assign of group $group',
    async ({ group, devices }) => {
      const sim = simCopy();
      const stateDir = path.join(sim.root, 'state');
      const opts = { root: sim.root, simulate: true, stateDir };
      const original = driverState(sim, devices);
      // N = writes of one uninterrupted assign.
      const w0 = sim.kernel.writeCount();
      await assignGroup(group, opts);
      const n = sim.kernel.writeCount() - w0;
      await releaseGroup(group, opts);
      expect(n).toBeGreaterThanOrEqual(6);

      for (let k = 1; k <= n; k++) {
        const child = runCli(['assign', group, '--root', sim.root, '--simulate', '--state-dir', stateDir, '--json'], { ISOGROUP_SIM_KILL_AFTER: String(k) });
        expect(child.signal, `k=${k}: ${child.stderr}`).toBe('SIGKILL');
        // The journal recorded the transaction before the first write.
        expect(
          readJournal(stateDir).entries.map((e) => [e.groupId, e.state]),
          `k=${k}`,
        ).toEqual([[group, 'assigning']]);
        const r = await recover(opts);
        expect(
          r.recovered.map((g) => [g.groupId, g.ok]),
          `k=${k}`,
        ).toEqual([[group, true]]);
        const after = driverState(sim, devices);
        expect(after, `k=${k}`).toEqual(original);
        // No device that had a driver is left without one.
        for (const b of devices) if (original[b]!.driver) expect(after[b]!.driver, `k=${k} ${b}`).not.toBeNull();
        expect(readJournal(stateDir).entries).toEqual([]);
      }
      // One more than N: the child finishes.
      const done = runCli(['assign', group, '--root', sim.root, '--simulate', '--state-dir', stateDir, '--json'], { ISOGROUP_SIM_KILL_AFTER: String(n + 1) });
      expect(done.status, done.stderr).toBe(0);
      expect(JSON.parse(done.stdout)).toMatchObject({ groupId: group, dryRun: false });
    },
    600_000,
  );

  it('release killed half-way: recover finishes giving the devices back', async () => {
    const devices = ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'];
    const sim = simCopy();
    const stateDir = path.join(sim.root, 'state');
    const original = driverState(sim, devices);
    await assignGroup('23', { root: sim.root, simulate: true, stateDir });
    const child = runCli(['release', '23', '--root', sim.root, '--simulate', '--state-dir', stateDir], { ISOGROUP_SIM_KILL_AFTER: '5' });
    expect(child.signal).toBe('SIGKILL');
    expect(readJournal(stateDir).entries.map((e) => e.state)).toEqual(['releasing']);
    await recover({ root: sim.root, simulate: true, stateDir });
    expect(driverState(sim, devices)).toEqual(original);
  }, 120_000);
});

describe('crash during recover', () => {
  it('recover killed half-way is simply run again', () => {
    const devices = ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'];
    const sim = simCopy();
    const stateDir = path.join(sim.root, 'state');
    const original = driverState(sim, devices);
    const crashed = runCli(['assign', '23', '--root', sim.root, '--simulate', '--state-dir', stateDir], { ISOGROUP_SIM_KILL_AFTER: '8' });
    expect(crashed.signal).toBe('SIGKILL');
    const recoverCrashed = runCli(['recover', '--root', sim.root, '--simulate', '--state-dir', stateDir], { ISOGROUP_SIM_KILL_AFTER: '2' });
    expect(recoverCrashed.signal).toBe('SIGKILL');
    expect(readJournal(stateDir).entries.map((e) => e.groupId)).toEqual(['23']);
    const again = runCli(['recover', '--root', sim.root, '--simulate', '--state-dir', stateDir, '--json']);
    expect(again.status, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).recovered.map((g: { groupId: string; ok: boolean }) => [g.groupId, g.ok])).toEqual([['23', true]]);
    expect(driverState(sim, devices)).toEqual(original);
  }, 120_000);
});

describe('concurrency', () => {
  it('two processes assigning the same group: exactly one wins, the other gets E_GROUP_BUSY', async () => {
    const sim = simCopy();
    const stateDir = path.join(sim.root, 'state');
    const pause = path.join(sim.root, 'pause');
    const first = spawn(process.execPath, [bin, 'assign', '23', '--root', sim.root, '--simulate', '--state-dir', stateDir, '--to', 'alice', '--json'], {
      env: { ...process.env, ISOGROUP_SIM_PAUSE_AFTER: '2', ISOGROUP_SIM_PAUSE_FILE: pause },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    first.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => first.on('exit', (code) => resolve(code)));
    await expect.poll(() => fs.existsSync(`${pause}.paused`), { timeout: 60_000, interval: 50 }).toBe(true);

    // The first holds the state-directory lock mid-transaction: same group, and an overlapping BDF.
    for (const target of ['23', '0000:0b:00.2']) {
      const second = runCli(['assign', target, '--root', sim.root, '--simulate', '--state-dir', stateDir, '--to', 'bob', '--json']);
      expect(second.status).toBe(1);
      expect(JSON.parse(second.stdout).error.code).toBe('E_GROUP_BUSY');
    }
    fs.writeFileSync(`${pause}.go`, '');
    expect(await exited).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ groupId: '23', owner: 'alice' });

    // Afterwards the group is taken: refused as already assigned, never silently repeated; another
    // owner is refused because the group is in alice's context.
    const codeOf = async (owner: string): Promise<string | undefined> => {
      try {
        await assignGroup('23', { root: sim.root, simulate: true, stateDir, owner });
      } catch (error) {
        if (isIsogroupError(error)) return error.code;
      }
      return undefined;
    };
    expect(await codeOf('alice')).toBe('E_ALREADY_ASSIGNED');
    expect(await codeOf('bob')).toBe('E_CONTEXT');
    const j = readJournal(stateDir);
    expect(j.entries.map((e) => [e.groupId, e.owner, e.state])).toEqual([['23', 'alice', 'assigned']]);
  }, 180_000);

  it('a SIGKILLed holder of the lock does not block the next operation', async () => {
    const sim = simCopy();
    const stateDir = path.join(sim.root, 'state');
    const child = runCli(['assign', '23', '--root', sim.root, '--simulate', '--state-dir', stateDir], { ISOGROUP_SIM_KILL_AFTER: '1' });
    expect(child.signal).toBe('SIGKILL');
    await expect(recover({ root: sim.root, simulate: true, stateDir })).resolves.toBeDefined();
  }, 120_000);
});
