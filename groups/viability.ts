import type { Bdf } from '../model/bdf.js';
import type { PciDevice } from '../model/device.js';

// VFIO's rule (since 5.19 the DMA-ownership API, anchors A.2.3): a group can be handed to a user
// when every device is unbound, bound to a vfio driver (vfio-pci or a variant: a vfio-dev/
// directory marks one), or bound to a driver that manages DMA itself (driver_managed_dma):
// pci-stub, and pcieport for bridges. Any other driver (shpchp on a bridge included, as the
// real kernel showed in oracle/NOTES.md) claims DMA ownership and blocks the group.

export interface Blocker {
  bdf: Bdf;
  driver: string | null;
  reason: string;
}

export interface Viability {
  viable: boolean;
  blockers: Blocker[];
}

/** Drivers with driver_managed_dma = true, other than vfio ones. */
export const DMA_MANAGED_DRIVERS: ReadonlySet<string> = new Set(['pci-stub']);
export const DMA_MANAGED_BRIDGE_DRIVERS: ReadonlySet<string> = new Set(['pcieport']);

export const deviceBlocker = (d: PciDevice): Blocker | null => {
  if (d.driver === null) return null;
  if (d.vfioDriver || d.driver === 'vfio-pci') return null;
  if (DMA_MANAGED_DRIVERS.has(d.driver)) return null;
  if (d.isBridge && DMA_MANAGED_BRIDGE_DRIVERS.has(d.driver)) return null;
  if (d.isBridge && d.driver === 'shpchp') {
    return { bdf: d.bdf, driver: d.driver, reason: `bridge ${d.bdf} is bound to shpchp, a host driver that owns DMA; unbinding it makes the group viable, but hotplug behind it then needs a rescan` };
  }
  return { bdf: d.bdf, driver: d.driver, reason: `${d.bdf} is bound to host driver ${d.driver}; it must be unbound or moved to vfio-pci` };
};

export const checkViability = (devices: PciDevice[]): Viability => {
  const blockers = devices.map(deviceBlocker).filter((b): b is Blocker => b !== null);
  return { viable: blockers.length === 0, blockers };
};
