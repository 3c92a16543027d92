import { describe, expect, it } from 'vitest';
import { planAssign, planRelease } from '../../bind/plan.js';
import { isIsogroupError } from '../../errors.js';
import type { Bdf } from '../../model/bdf.js';
import type { HostUse } from '../../sysfs/host-use.js';
import { device, host } from '../helpers/host-builder.js';

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (error) {
    if (isIsogroupError(error)) return error.code;
    throw error;
  }
  return undefined;
};

// A pcie-pci-bridge group like mixed's group 22, plus a driverless endpoint and one already on vfio-pci.
const snap = () =>
  host([
    device('0000:09:00.0', { kernelGroup: '22', isBridge: true, headerLayout: 'bridge', portType: 'pcie-to-pci-bridge', driver: null }),
    device('0000:0a:01.0', { kernelGroup: '22', driver: 'e1000', portType: 'conventional' }),
    device('0000:0a:02.0', { kernelGroup: '22', driver: null, portType: 'conventional' }),
    device('0000:0a:03.0', { kernelGroup: '22', driver: 'vfio-pci', driverOverride: 'vfio-pci', vfioDriver: true, portType: 'conventional' }),
    device('0000:01:00.0', { kernelGroup: '4', isBridge: true, headerLayout: 'bridge', portType: 'conventional', driver: 'shpchp' }),
    device('0000:02:01.0', { kernelGroup: '4', driver: 'e1000', portType: 'conventional' }),
    device('0000:05:00.0', { kernelGroup: '19', isBridge: true, headerLayout: 'bridge', portType: 'downstream-port', driver: 'pcieport' }),
    device('0000:06:00.0', { kernelGroup: '19', driver: 'e1000e' }),
  ]);

const kinds = (steps: { kind: string; bdf: string }[], bdf: string): string[] => steps.filter((s) => s.bdf === bdf).map((s) => s.kind);

describe('planAssign', () => {
  it('per device: override, unbind (if bound), probe, verify; by address, never new_id', () => {
    const plan = planAssign(snap(), '22', { owner: 'alice' });
    expect(kinds(plan.steps, '0000:0a:01.0')).toEqual(['override', 'unbind', 'probe', 'verify']);
    expect(kinds(plan.steps, '0000:0a:02.0')).toEqual(['override', 'probe', 'verify']);
    expect(kinds(plan.steps, '0000:0a:03.0')).toEqual(['verify']);
    expect(kinds(plan.steps, '0000:09:00.0')).toEqual([]); // driverless bridge stays as it is
    expect(plan.steps.find((s) => s.kind === 'unbind')!.file).toBe('sys/bus/pci/drivers/e1000/unbind');
    expect(plan.steps.every((s) => !s.file?.includes('new_id'))).toBe(true);
    expect(plan.members.find((m) => m.bdf === '0000:0a:01.0')).toMatchObject({ originalDriver: 'e1000', originalOverride: null, role: 'endpoint' });
    expect(plan.owner).toBe('alice');
  });

  it('a pcieport bridge is kept; a shpchp bridge is unbound with a note about rescans', () => {
    const kept = planAssign(snap(), '19', { owner: 'a' });
    expect(kept.members.find((m) => m.bdf === '0000:05:00.0')!.role).toBe('bridge-kept');
    expect(kinds(kept.steps, '0000:05:00.0')).toEqual([]);
    const shpc = planAssign(snap(), '4', { owner: 'a' });
    expect(shpc.members.find((m) => m.bdf === '0000:01:00.0')!.role).toBe('bridge-unbind');
    expect(kinds(shpc.steps, '0000:01:00.0')).toEqual(['override', 'unbind', 'verify']);
    expect(shpc.steps.find((s) => s.kind === 'unbind' && s.bdf === '0000:01:00.0')!.file).toBe('sys/bus/pci/drivers/shpchp/unbind');
    expect(shpc.notes.join(' ')).toMatch(/rescan/);
    // Endpoints are moved before the bridge loses its hotplug driver.
    expect(shpc.steps.findIndex((s) => s.bdf === '0000:02:01.0')).toBeLessThan(shpc.steps.findIndex((s) => s.bdf === '0000:01:00.0'));
  });

  it('refuses host use unless forced, and the root filesystem even when forced', () => {
    const use: HostUse = { bdf: '0000:06:00.0' as Bdf, kind: 'mount', what: '/dev/sdb1 is mounted at /data', loss: 'access to /data', forceable: true };
    const root: HostUse = { bdf: '0000:06:00.0' as Bdf, kind: 'root-fs', what: '/dev/sda2 is the root filesystem', loss: 'the host', forceable: false };
    expect(codeOf(() => planAssign(snap(), '19', { owner: 'a', hostUse: [use] }))).toBe('E_HOST_IN_USE');
    const forced = planAssign(snap(), '19', { owner: 'a', hostUse: [use], force: true });
    expect(forced.forced).toEqual([use]);
    expect(codeOf(() => planAssign(snap(), '19', { owner: 'a', hostUse: [root], force: true }))).toBe('E_HOST_IN_USE');
  });

  it('unknown group: E_NOT_FOUND', () => {
    expect(codeOf(() => planAssign(snap(), '99', { owner: 'a' }))).toBe('E_NOT_FOUND');
  });
});

describe('planRelease', () => {
  it('restores journaled drivers from the current state: clear override, unbind vfio-pci, probe, verify', () => {
    const s = host([
      device('0000:0a:01.0', { kernelGroup: '22', driver: 'vfio-pci', driverOverride: 'vfio-pci', vfioDriver: true }),
      device('0000:0a:02.0', { kernelGroup: '22', driver: 'vfio-pci', driverOverride: 'vfio-pci', vfioDriver: true }),
    ]);
    const plan = planRelease(s, {
      groupId: '22',
      owner: 'a',
      root: '/',
      simulate: false,
      state: 'assigned',
      time: 't',
      notes: [],
      members: [
        { bdf: '0000:0a:01.0' as Bdf, role: 'endpoint', originalDriver: 'e1000', originalOverride: null },
        { bdf: '0000:0a:02.0' as Bdf, role: 'endpoint', originalDriver: null, originalOverride: null },
      ],
    });
    expect(kinds(plan.steps, '0000:0a:01.0')).toEqual(['override', 'unbind', 'probe', 'verify']);
    expect(plan.steps.find((s) => s.kind === 'override')!.value).toBe('\n');
    expect(plan.steps.find((s) => s.kind === 'verify' && s.bdf === '0000:0a:01.0')!.expect).toBe('e1000');
    expect(kinds(plan.steps, '0000:0a:02.0')).toEqual(['override', 'unbind', 'verify']); // had no driver: stays driverless
    expect(plan.steps[0]!.bdf).toBe('0000:0a:02.0'); // reverse order of assignment
  });
});
