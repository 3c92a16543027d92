import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assignGroup } from '../../api/assign.js';
import { recover, releaseGroup } from '../../api/release.js';
import { status } from '../../api/status.js';
import { type IsogroupError, isIsogroupError } from '../../errors.js';
import { readJournal } from '../../state/journal.js';
import { driverState, simCopy } from '../helpers/sim-root.js';

// As the kernel's iommufd_fail_nth selftest: run the transaction once to count its N sysfs writes,
// then fail write k for every k in 1..N. Afterwards every device is exactly as before the
// transaction, or the result is E_ROLLBACK_FAILED with the journal kept and recover succeeds.

const catchError = async (fn: () => Promise<unknown>): Promise<IsogroupError | null> => {
  try {
    await fn();
  } catch (error) {
    if (isIsogroupError(error)) return error;
    throw error;
  }
  return null;
};

const GROUPS: { name: string; group: string; target: string; devices: string[] }[] = [
  // pcie-pci-bridge (driverless, stays) + 3 conventional endpoints
  { name: 'mixed group 22 (bridge + 3 endpoints)', group: '22', target: '22', devices: ['0000:09:00.0', '0000:0a:01.0', '0000:0a:02.0', '0000:0a:03.0'] },
  // 3-function endpoint, assigned by one of its BDFs
  { name: 'mixed group 23 (3 functions, by BDF)', group: '23', target: '0000:0b:00.1', devices: ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'] },
];

describe.each(GROUPS)('fail-nth sweep: $name', ({ group, target, devices }) => {
  it('assign: every k-th write failing leaves the host as it was', async () => {
    const sim = simCopy();
    const stateDir = path.join(sim.root, 'state');
    const opts = { root: sim.root, simulate: true, stateDir, owner: 'alice' };
    const original = driverState(sim, devices);

    const w0 = sim.kernel.writeCount();
    const ok = await assignGroup(target, opts);
    const n = sim.kernel.writeCount() - w0;
    expect(ok.groupId).toBe(group);
    expect(n).toBeGreaterThanOrEqual(6);
    expect(ok.done!.filter((s) => s.kind !== 'verify')).toHaveLength(n);
    await releaseGroup(group, opts);
    expect(driverState(sim, devices)).toEqual(original);

    for (let k = 1; k <= n; k++) {
      sim.kernel.injectFailure({ nth: k, errno: k % 2 ? 'EIO' : 'ENOMEM' });
      const error = await catchError(() => assignGroup(target, opts));
      expect(error, `k=${k}`).not.toBeNull();
      if (error!.code === 'E_ROLLBACK_FAILED') {
        expect(readJournal(stateDir).entries.map((e) => e.groupId)).toEqual([group]);
        await recover(opts);
      } else {
        const details = error!.details as { done: unknown[]; undone: { ok: boolean }[] };
        // The failing step is recorded; completed steps were undone.
        expect(details.done.length, `k=${k}`).toBeGreaterThanOrEqual(1);
        if (k > 1) expect(details.undone.length, `k=${k}`).toBeGreaterThan(0);
        expect(details.undone.every((s) => s.ok)).toBe(true);
      }
      expect(driverState(sim, devices), `k=${k}`).toEqual(original);
      expect(readJournal(stateDir).entries, `k=${k}`).toEqual([]);
    }
  });

  it('release: every k-th write failing leaves the group assigned, whole', async () => {
    const sim = simCopy();
    const stateDir = path.join(sim.root, 'state');
    const opts = { root: sim.root, simulate: true, stateDir, owner: 'bob' };
    const original = driverState(sim, devices);
    await assignGroup(target, opts);
    const assigned = driverState(sim, devices);
    for (const b of devices) if (original[b]!.driver !== null && b !== '0000:09:00.0') expect(assigned[b]!.driver).toBe('vfio-pci');

    const w0 = sim.kernel.writeCount();
    await releaseGroup(group, opts);
    const n = sim.kernel.writeCount() - w0;
    expect(driverState(sim, devices)).toEqual(original);
    expect(n).toBeGreaterThanOrEqual(6);
    await assignGroup(target, opts);

    for (let k = 1; k <= n; k++) {
      sim.kernel.injectFailure({ nth: k, errno: 'EIO' });
      const error = await catchError(() => releaseGroup(target, opts));
      expect(error, `k=${k}`).not.toBeNull();
      if (error!.code === 'E_ROLLBACK_FAILED') {
        await recover(opts);
        expect(driverState(sim, devices), `k=${k}`).toEqual(original);
        await assignGroup(target, opts);
        continue;
      }
      expect(driverState(sim, devices), `k=${k}`).toEqual(assigned);
      expect(
        status({ stateDir }).groups.map((g) => [g.id, g.owner, g.state]),
        `k=${k}`,
      ).toEqual([[group, 'bob', 'assigned']]);
    }
    await releaseGroup(target, opts);
    expect(driverState(sim, devices)).toEqual(original);
  });
});

describe('a failure that also breaks the undo', () => {
  it('E_ROLLBACK_FAILED keeps the journal; recover restores every device once the fault is gone', async () => {
    const sim = simCopy();
    const stateDir = path.join(sim.root, 'state');
    const opts = { root: sim.root, simulate: true, stateDir };
    const devices = GROUPS[1]!.devices;
    const original = driverState(sim, devices);
    sim.kernel.injectFailure({ file: 'drivers_probe', errno: 'EIO', persistent: true });
    const error = await catchError(() => assignGroup('23', opts));
    expect(error?.code).toBe('E_ROLLBACK_FAILED');
    expect(error?.message).toMatch(/recover/);
    const j = readJournal(stateDir);
    expect(j.entries).toHaveLength(1);
    expect(j.entries[0]).toMatchObject({ groupId: '23', state: 'rolling-back' });
    // Still broken: recover fails too and keeps the journal.
    expect((await catchError(() => recover(opts)))?.code).toBe('E_ROLLBACK_FAILED');
    expect(readJournal(stateDir).entries).toHaveLength(1);
    // New assignments are refused until recovered.
    expect((await catchError(() => assignGroup('22', opts)))?.code).toBe('E_GROUP_BUSY');
    sim.kernel.clearFailures();
    const r = await recover(opts);
    expect(r.recovered.map((g) => [g.groupId, g.ok])).toEqual([['23', true]]);
    expect(driverState(sim, devices)).toEqual(original);
    expect(readJournal(stateDir).entries).toEqual([]);
  });
});
