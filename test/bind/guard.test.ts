import { describe, expect, it } from 'vitest';
import { decideGuard } from '../../bind/guard.js';
import { parseBdf } from '../../model/bdf.js';
import { device, host } from '../helpers/host-builder.js';

const B = (s: string) => parseBdf(s);
const bridge = device('0000:09:00.0', { isBridge: true, portType: 'pcie-to-pci-bridge', headerLayout: 'bridge', kernelGroup: '22' });
const assigned = [{ groupId: '22', owner: 'alice', devices: [B('0000:09:00.0'), B('0000:0a:01.0'), B('0000:0a:02.0')] }];
const onVfio = (bdf: string) => device(bdf, { kernelGroup: '22', driver: 'vfio-pci', vfioDriver: true, driverOverride: 'vfio-pci', parent: B('0000:09:00.0') });

describe('decideGuard', () => {
  it('does nothing for a healthy assigned group', () => {
    const snap = host([bridge, onVfio('0000:0a:01.0'), onVfio('0000:0a:02.0')]);
    expect(decideGuard(snap, assigned)).toEqual({ actions: [], events: [] });
  });

  it('claims a driverless device that appeared in the group and reports the membership change', () => {
    const snap = host([bridge, onVfio('0000:0a:01.0'), onVfio('0000:0a:02.0'), device('0000:0a:04.0', { kernelGroup: '22' })]);
    const d = decideGuard(snap, assigned);
    expect(d.actions).toEqual([expect.objectContaining({ kind: 'claim', bdf: '0000:0a:04.0', groupId: '22', owner: 'alice' })]);
    expect(d.events).toEqual([expect.objectContaining({ type: 'membership-changed', added: ['0000:0a:04.0'], removed: [] })]);
  });

  it('repairs a host driver inside the group and reports a violation naming device, driver and group', () => {
    const snap = host([bridge, onVfio('0000:0a:01.0'), onVfio('0000:0a:02.0'), device('0000:0a:04.0', { kernelGroup: '22', driver: 'e1000' })]);
    const d = decideGuard(snap, assigned);
    expect(d.actions).toContainEqual(expect.objectContaining({ kind: 'repair', bdf: '0000:0a:04.0', driver: 'e1000' }));
    expect(d.events).toContainEqual(expect.objectContaining({ type: 'violation', bdf: '0000:0a:04.0', driver: 'e1000', groupId: '22' }));
  });

  it('leaves pcieport bridges alone but unbinds a shpchp bridge', () => {
    const ok = host([{ ...bridge, driver: 'pcieport' }, onVfio('0000:0a:01.0'), onVfio('0000:0a:02.0')]);
    expect(decideGuard(ok, assigned).actions).toEqual([]);
    const bad = host([{ ...bridge, driver: 'shpchp' }, onVfio('0000:0a:01.0'), onVfio('0000:0a:02.0')]);
    expect(decideGuard(bad, assigned).actions).toEqual([expect.objectContaining({ kind: 'unbind-bridge', bdf: '0000:09:00.0', driver: 'shpchp' })]);
  });

  it('moves a pci-stub device to vfio-pci without calling it a violation', () => {
    const snap = host([bridge, onVfio('0000:0a:01.0'), device('0000:0a:02.0', { kernelGroup: '22', driver: 'pci-stub' })]);
    const d = decideGuard(snap, assigned);
    expect(d.actions).toEqual([expect.objectContaining({ kind: 'repair', bdf: '0000:0a:02.0', driver: 'pci-stub' })]);
    expect(d.events.filter((e) => e.type === 'violation')).toEqual([]);
  });

  it('turns SR-IOV autoprobe off on an assigned PF and restores a missing override', () => {
    const pf = device('0000:0a:01.0', {
      kernelGroup: '22',
      driver: 'vfio-pci',
      vfioDriver: true,
      driverOverride: null,
      sriov: {
        offset: 0x160,
        initialVfs: 8,
        totalVfs: 8,
        numVfs: 0,
        firstVfOffset: 128,
        vfStride: 2,
        vfDeviceId: '0x10ed',
        vfEnabled: false,
        driversAutoprobe: true,
        sysfsNumVfs: 0,
        sysfsTotalVfs: 8,
      },
    });
    const d = decideGuard(host([bridge, pf, onVfio('0000:0a:02.0')]), assigned);
    expect(d.actions.map((a) => a.kind).sort()).toEqual(['set-override', 'sriov-autoprobe-off']);
  });

  it('reports a group that vanished', () => {
    const d = decideGuard(host([device('0000:00:02.0', { kernelGroup: '2' })]), assigned);
    expect(d.events).toEqual([expect.objectContaining({ type: 'group-vanished', groupId: '22' })]);
    expect(d.actions).toEqual([]);
  });
});
