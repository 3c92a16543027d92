import type { Bdf } from '../model/bdf.js';
import type { PciDevice } from '../model/device.js';
import { isDmaManagedDriver, isVfioDriverName } from '../model/drivers.js';

// VFIO's rule (since 5.19 the DMA-ownership API, anchors A.2.3): a group can be handed to a user
// when every device is unbound, bound to a vfio driver (vfio-pci or a variant: a vfio-dev/
// directory marks one), or bound to a driver that manages DMA itself (driver_managed_dma):
// pci-stub, and pcieport for bridges. Any other driver (shpchp on a bridge included, as the
// real kernel showed in oracle/NOTES.md) claims DMA ownership and blocks the group.
// This is the one copy of that rule: planning, the guard, contexts and the fixture kernel ask here.

export interface Blocker {
  bdf: Bdf;
  driver: string | null;
  reason: string;
}

export interface Viability {
  viable: boolean;
  blockers: Blocker[];
}

/** What a device is judged by: a scanned PciDevice, or the guard's lighter read of the same fields. */
export type ViabilityFacts = Pick<PciDevice, 'bdf' | 'isBridge' | 'driver' | 'vfioDriver'>;

/** On vfio-pci or a variant (a vfio-dev/ child marks one). */
export const onVfio = (d: Pick<PciDevice, 'driver' | 'vfioDriver'>): boolean => d.vfioDriver || isVfioDriverName(d.driver);

/** Why this device keeps its group from a user, or null when it does not. */
export const deviceBlocker = (d: ViabilityFacts): Blocker | null => {
  if (d.driver === null || onVfio(d)) return null;
  // pcieport manages DMA only as the port driver of a bridge.
  if (isDmaManagedDriver(d.driver) && (d.driver !== 'pcieport' || d.isBridge)) return null;
  if (d.isBridge && d.driver === 'shpchp') {
    return {
      bdf: d.bdf,
      driver: d.driver,
      reason: `bridge ${d.bdf} is bound to shpchp, a host driver that owns DMA; unbinding it makes the group viable, but hotplug behind it then needs a rescan`,
    };
  }
  return { bdf: d.bdf, driver: d.driver, reason: `${d.bdf} is bound to host driver ${d.driver}; it must be unbound or moved to vfio-pci` };
};

export const checkViability = (devices: readonly ViabilityFacts[]): Viability => {
  const blockers = devices.map(deviceBlocker).filter((b): b is Blocker => b !== null);
  return { viable: blockers.length === 0, blockers };
};
