import { describe, expect, it } from 'vitest';
import * as isogroup from '../../index.js';
import { bundledCapture } from '../helpers/paths.js';

// The programmatic API as a library user imports it: one module, plain data, typed errors.
describe('public API (index.ts)', () => {
  it('lists devices and groups of a capture and agrees with its kernel groups', () => {
    const root = bundledCapture('noacs');
    expect(isogroup.listDevices({ root, pciIds: null }).devices).toHaveLength(33);
    const groups = isogroup.listGroups({ root, pciIds: null });
    expect(groups.source).toBe('kernel');
    expect(groups.groups).toHaveLength(13);
    expect(isogroup.compareGroups({ root }).agree).toBe(true);
    // Each group says whether it can be reset on its own, and which groups a reset drags along.
    expect(groups.groups.find((g) => g.id === '1')!.reset).toMatchObject({
      canResetAlone: expect.any(Boolean),
      scope: expect.any(Array),
      groupsAffected: expect.any(Array),
    });
  });

  it('throws typed errors a caller can branch on', () => {
    const error = (() => {
      try {
        isogroup.showDevice('../../etc', { root: bundledCapture('mixed') });
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(isogroup.isIsogroupError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'E_INVALID_BDF' });
    expect(isogroup.exitCodeFor(error)).toBe(2);
  });

  it('exports the guard, contexts, IOVA and policy building blocks', () => {
    for (const name of [
      'GuardDaemon',
      'DaemonClient',
      'assignGroup',
      'assignToOwner',
      'releaseGroup',
      'recover',
      'deriveGroups',
      'checkViability',
      'decideGuard',
      'usableIova',
      'parsePolicy',
      'showContext',
      'readPool',
      'generateCdi',
      'KubeletPlugin',
    ]) {
      expect(typeof (isogroup as Record<string, unknown>)[name], name).toBe('function');
    }
    const usable = isogroup.usableIova({ start: 0n, end: (1n << 39n) - 1n }, [{ start: 0xfee00000n, end: 0xfeefffffn, type: 'msi' }]);
    expect(usable.ranges).toEqual([
      { start: 0n, end: 0xfedfffffn },
      { start: 0xfef00000n, end: (1n << 39n) - 1n },
    ]);
  });
});
