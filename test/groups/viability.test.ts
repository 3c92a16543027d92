import { describe, expect, it } from 'vitest';
import { listGroups } from '../../api/groups.js';
import { checkViability } from '../../groups/viability.js';
import { device } from '../helpers/host-builder.js';
import { oracleCaptures } from '../helpers/paths.js';

describe("viability (VFIO's rule)", () => {
  it('unbound, vfio-pci, a vfio variant and pci-stub devices are fine', () => {
    expect(
      checkViability([
        device('0000:01:00.0', { driver: null }),
        device('0000:01:00.1', { driver: 'vfio-pci', vfioDriver: true }),
        device('0000:01:00.2', { driver: 'mlx5_vfio_pci', vfioDriver: true }),
        device('0000:01:00.3', { driver: 'pci-stub' }),
      ]),
    ).toEqual({ viable: true, blockers: [] });
  });

  it('a bridge on pcieport does not block; a host driver does, named per device', () => {
    const v = checkViability([
      device('0000:00:1c.0', { driver: 'pcieport', isBridge: true, portType: 'root-port' }),
      device('0000:05:00.0', { driver: 'e1000e' }),
    ]);
    expect(v.viable).toBe(false);
    expect(v.blockers).toEqual([
      { bdf: '0000:05:00.0', driver: 'e1000e', reason: '0000:05:00.0 is bound to host driver e1000e; it must be unbound or moved to vfio-pci' },
    ]);
  });

  it('a bridge bound to shpchp blocks (the real kernel refused SET_CONTAINER with EPERM)', () => {
    const v = checkViability([
      device('0000:09:00.0', { driver: 'shpchp', isBridge: true, portType: 'pcie-to-pci-bridge' }),
      device('0000:0a:01.0', { driver: 'vfio-pci', vfioDriver: true }),
    ]);
    expect(v.viable).toBe(false);
    expect(v.blockers[0]).toMatchObject({ bdf: '0000:09:00.0', driver: 'shpchp' });
    expect(v.blockers[0]!.reason).toContain('hotplug behind it then needs a rescan');
  });

  it('pcieport on a non-bridge is a host driver like any other', () => {
    expect(checkViability([device('0000:01:00.0', { driver: 'pcieport', isBridge: false })]).viable).toBe(false);
  });

  it('matches what the real kernel reported on mixed-vfio: groups 19, 22, 23 viable, others with host drivers not', () => {
    const capture = oracleCaptures().find((c) => c.name === 'mixed-vfio')!;
    const r = listGroups({ root: capture.tarball, pciIds: null, source: 'kernel' });
    const byFirst = new Map(r.groups.map((g) => [g.devices[0], g]));
    // NOTES.md bind test: 19 (05:00.0 pcieport + 06:00.0 vfio), 22 (bridge, no driver + 3 on vfio), 23 (3 on vfio) VIABLE.
    for (const first of ['0000:05:00.0', '0000:09:00.0', '0000:0b:00.0']) expect(byFirst.get(first as never)).toMatchObject({ viable: true, blockers: [] });
    expect(byFirst.get('0000:00:01.0' as never)).toMatchObject({ viable: false, blockers: [{ bdf: '0000:00:01.0', driver: 'virtio-pci' }] });
    // Root ports alone on pcieport are viable.
    expect(byFirst.get('0000:00:10.0' as never)!.viable).toBe(true);
  });
});
