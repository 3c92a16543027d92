import { deriveGroups } from '../groups/derive.js';
import type { Bdf } from '../model/bdf.js';
import type { HostSnapshot } from '../model/device.js';

// Which existing devices a newly added device shares an IOMMU group with. The kernel decides this in
// pci_device_group() when the device is added; we ask the same question of a snapshot that already
// contains the new device (without a kernel group yet).

export type PeerFinder = (snap: HostSnapshot, bdf: Bdf) => Bdf[];

/**
 * Without the full derivation: a device behind a PCI(-X) bridge aliases to it and joins its group; a
 * device behind a PCIe port without ACS joins the port's group; otherwise it is alone.
 */
export const topologyPeers: PeerFinder = (snap, bdf) => {
  const d = snap.devices.get(bdf);
  if (!d || d.parent === null) return [];
  const parent = snap.devices.get(d.parent);
  if (!parent) return [];
  if (parent.portType === 'conventional' || parent.portType === 'pcie-to-pci-bridge') return [parent.bdf];
  if ((parent.portType === 'root-port' || parent.portType === 'downstream-port') && parent.acsKnown && parent.acs === null) return [parent.bdf];
  if (parent.portType === 'root-port' || parent.portType === 'downstream-port') return [];
  return [parent.bdf];
};

/** The kernel's own rules (groups/derive.ts): the group the new device derives into. */
export const derivedPeers: PeerFinder = (snap, bdf) => {
  let derived: ReturnType<typeof deriveGroups>;
  try {
    derived = deriveGroups(snap);
  } catch {
    return topologyPeers(snap, bdf);
  }
  const id = derived.groupOf.get(bdf);
  const group = id === undefined ? undefined : derived.groups.find((g) => g.id === id);
  if (!group) return topologyPeers(snap, bdf);
  return group.devices.filter((b) => b !== bdf);
};

let finder: PeerFinder = derivedPeers;

/** Plug in the full group derivation (groups/derive.ts) once it is available. */
export const setPeerFinder = (f: PeerFinder): void => {
  finder = f;
};

export const peersOf = (snap: HostSnapshot, bdf: Bdf): Bdf[] => finder(snap, bdf);
