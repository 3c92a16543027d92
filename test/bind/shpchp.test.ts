import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assignGroup } from '../../api/assign.js';
import { releaseGroup } from '../../api/release.js';
import { driverState, simCopy } from '../helpers/sim-root.js';

// NOTES.md native-hotplug mode: a conventional bridge bound to shpchp makes its group non-viable even
// with every endpoint on vfio-pci. assign unbinds it (and says hotplug then needs a rescan);
// release gives it back.

describe('a group behind a shpchp-bound bridge', () => {
  it('assign unbinds shpchp so the group becomes viable; release rebinds it', async () => {
    const sim = simCopy();
    const stateDir = path.join(sim.root, 'state');
    const bridge = '0000:09:00.0';
    sim.kernel.setDefaultDriver(bridge, 'shpchp');
    sim.port.writeText('sys/bus/pci/drivers_probe', bridge);
    expect(sim.kernel.driverOf(bridge)).toBe('shpchp');
    const devices = [bridge, '0000:0a:01.0', '0000:0a:02.0', '0000:0a:03.0'];
    const original = driverState(sim, devices);

    const r = await assignGroup('22', { root: sim.root, simulate: true, stateDir, owner: 'alice' });
    expect(r.plan.members.find((m) => m.bdf === bridge)!.role).toBe('bridge-unbind');
    expect(r.notes!.join(' ')).toMatch(/rescan/);
    expect(sim.kernel.driverOf(bridge)).toBeNull();
    expect(sim.kernel.overrideOf(bridge)).toBe('none');
    const g = sim.vfio.openGroup('22');
    const c = sim.vfio.openContainer();
    expect(g.status().viable).toBe(true);
    g.setContainer(c);
    // Hotplug behind the unbound bridge waits for a rescan; then the kernel's guard keeps the host driver out.
    const added = sim.kernel.addDevice({ bridge, vendor: 0x8086, device: 0x100e, driver: 'e1000' });
    expect(added.pending).toBe(true);
    sim.port.writeText('sys/bus/pci/rescan', '1');
    expect(sim.kernel.groupOf(added.bdf)).toBe('22');
    expect(sim.kernel.driverOf(added.bdf)).toBeNull();
    g.close();
    c.close();
    sim.port.writeText(`sys/bus/pci/devices/${added.bdf}/remove`, '1');

    await releaseGroup('22', { root: sim.root, simulate: true, stateDir });
    expect(driverState(sim, devices)).toEqual(original);
  });
});
