import type { Bdf } from '../model/bdf.js';
import type { HostSnapshot, PciDevice } from '../model/device.js';
import { parseKernelVersion } from './quirks.js';

// The view of a host the grouping rules need: for each device the kernel's idea of it
// (pci_is_pcie, PCIe type, multifunction, ACS registers, vendor/device ids) and of its bus
// (bus->self). Pure: built from a HostSnapshot, no I/O.

export interface TopoDevice {
  dev: PciDevice;
  bdf: Bdf;
  devfn: number;
  /** Numeric sort key: domain, bus, devfn (BDF order without parsing strings). */
  order: number;
  /** "DDDD:BB" of the bus the device sits on (a VF's virtual bus included). */
  busKey: string;
  vendorId: number;
  deviceId: number;
  subsystemVendorId: number | null;
  subsystemDeviceId: number | null;
  /** pci_is_pcie(); null when config space is too short to tell. */
  pcie: boolean | null;
  /** PCIe port type (only meaningful when pcie). */
  type: PciDevice['portType'];
  /** The kernel's dev->multifunction: header bit 7, or any function > 0 found by pci_scan_slot (not VFs). */
  multifunction: boolean;
  /** ACS registers; undefined when they cannot be known from the input. */
  acs: { cap: number; ctrl: number; sptCap32: number | null; sptCtrl32: number | null } | null | undefined;
  /** Bridge the device's bus hangs from (bus->self); null on a root bus or a virtual (SR-IOV) bus. */
  busSelf: Bdf | null;
  /** Upstream bridges, nearest first (virtual buses contribute none, as in the kernel's walks). */
  chain: Bdf[];
  onRootBus: boolean;
  /** Secondary bus of a bridge ("DDDD:BB"), for aliases (secondary bus, 00.0). */
  secondaryBusKey: string | null;
  /** A memory BAR in a type-1 header (the acs-rework's pci_has_mmio() for PCIe-to-PCI bridges). */
  hasMmioBar: boolean;
}

export interface Topology {
  devices: Map<Bdf, TopoDevice>;
  /** Devices per bus key, in devfn order. */
  byBus: Map<string, TopoDevice[]>;
  /** The order the kernel adds (and so probes) devices: per root bus, a bus's devices then its child buses; VFs and VMD domains last. */
  probeOrder: Bdf[];
  kernel: [number, number] | null;
  /** An AMD IOMMU (AMD-Vi, so an ACPI IVRS table) is present or assumed. */
  ivrs: boolean;
  ivrsAssumed: boolean;
}

const u16 = (b: Uint8Array, o: number): number | null => (o + 1 < b.length ? b[o]! | (b[o + 1]! << 8) : null);
const u32 = (b: Uint8Array, o: number): number | null => (o + 3 < b.length ? (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0 : null);

const hexId = (s: string | null): number | null => {
  if (!s?.startsWith('0x')) return null;
  const n = parseInt(s, 16);
  return Number.isNaN(n) ? null : n;
};

export const buildTopology = (snap: HostSnapshot, kernelRelease: string | null = null): Topology => {
  const devices = new Map<Bdf, TopoDevice>();
  for (const d of snap.devices.values()) {
    const bytes = snap.config.get(d.bdf);
    const pcie = d.portType === 'unknown' ? null : d.portType !== 'conventional';
    let acs: TopoDevice['acs'];
    if (d.acs) {
      const o = d.acs.offset;
      acs = {
        cap: d.acs.cap,
        ctrl: d.acs.ctrl,
        sptCap32: bytes ? u32(bytes, o + 4) : null,
        sptCtrl32: bytes ? u32(bytes, o + 8) : null,
      };
    } else {
      acs = d.acsKnown || pcie === false ? null : undefined;
    }
    let hasMmioBar = false;
    if (bytes && d.headerLayout === 'bridge') {
      for (const off of [0x10, 0x14]) {
        const bar = u32(bytes, off);
        if (bar !== null && bar !== 0 && (bar & 1) === 0 && (bar & ~0xf) !== 0) hasMmioBar = true;
      }
    }
    const subsystemVendorId = hexId(d.subsystemVendor) ?? (bytes ? u16(bytes, 0x2c) : null);
    devices.set(d.bdf, {
      dev: d,
      bdf: d.bdf,
      devfn: (d.slot << 3) | d.function,
      order: d.domain * 65536 + d.bus * 256 + ((d.slot << 3) | d.function),
      busKey: d.busId,
      vendorId: hexId(d.vendor) ?? -1,
      deviceId: hexId(d.device) ?? -1,
      subsystemVendorId,
      subsystemDeviceId: hexId(d.subsystemDevice),
      pcie,
      type: d.portType,
      multifunction: d.multifunction || (d.function > 0 && !d.isVirtfn),
      acs,
      busSelf: null,
      chain: [],
      onRootBus: false,
      secondaryBusKey: d.secondaryBus !== null ? `${d.domain.toString(16).padStart(4, '0')}:${d.secondaryBus.toString(16).padStart(2, '0')}` : null,
      hasMmioBar,
    });
  }
  const byBus = new Map<string, TopoDevice[]>();
  for (const t of devices.values()) {
    const parent = t.dev.parent !== null ? devices.get(t.dev.parent) : undefined;
    const chain: Bdf[] = [];
    const seen = new Set<Bdf>([t.bdf]);
    let cur = parent;
    while (cur && !seen.has(cur.bdf)) {
      seen.add(cur.bdf);
      chain.push(cur.bdf);
      cur = cur.dev.parent !== null ? devices.get(cur.dev.parent) : undefined;
    }
    t.chain = chain;
    // A VF whose bus number is not the parent bridge's secondary bus sits on a virtual bus (bus->self NULL).
    t.busSelf = parent && (parent.secondaryBusKey === null || parent.secondaryBusKey === t.busKey) ? parent.bdf : null;
    t.onRootBus = parent === undefined && !(t.dev.isVirtfn && t.dev.physfn !== null && devices.get(t.dev.physfn)?.busKey !== t.busKey);
    const list = byBus.get(t.busKey) ?? [];
    list.push(t);
    byBus.set(t.busKey, list);
  }
  for (const list of byBus.values()) list.sort((x, y) => x.devfn - y.devfn);

  // pci_bus_add_devices(): all devices of a bus, then each bridge's child bus, recursively.
  const probeOrder: Bdf[] = [];
  const placed = new Set<Bdf>();
  const children = new Map<Bdf, TopoDevice[]>();
  const roots: TopoDevice[] = [];
  for (const t of devices.values()) {
    if (t.dev.isVirtfn) continue;
    if (t.dev.parent !== null && devices.has(t.dev.parent)) {
      const list = children.get(t.dev.parent) ?? [];
      list.push(t);
      children.set(t.dev.parent, list);
    } else roots.push(t);
  }
  const addBus = (list: TopoDevice[]): void => {
    const sorted = [...list].sort((x, y) => x.order - y.order);
    for (const t of sorted)
      if (!placed.has(t.bdf)) {
        placed.add(t.bdf);
        probeOrder.push(t.bdf);
      }
    for (const t of sorted) {
      const kids = children.get(t.bdf);
      if (kids) addBus(kids);
    }
  };
  // Root buses in domain/bus order; VMD domains (behind a PCI device) come after the rest.
  const rootBuses = new Map<string, TopoDevice[]>();
  for (const t of roots) {
    const key = `${t.dev.hostBridgeDevice ? '1' : '0'}:${t.busKey}`;
    const list = rootBuses.get(key) ?? [];
    list.push(t);
    rootBuses.set(key, list);
  }
  for (const key of [...rootBuses.keys()].sort()) addBus(rootBuses.get(key)!);
  for (const t of [...devices.values()].sort((x, y) => x.order - y.order)) {
    if (!placed.has(t.bdf)) {
      placed.add(t.bdf);
      probeOrder.push(t.bdf);
    }
  }

  const amdUnits = [...snap.iommuUnits.values()].some((u) => u.kind === 'amd');
  const amdHost = [...devices.values()].some((t) => t.onRootBus && t.vendorId === 0x1022 && t.dev.class.startsWith('0x0600'));
  return {
    devices,
    byBus,
    probeOrder,
    kernel: parseKernelVersion(kernelRelease),
    ivrs: amdUnits || amdHost,
    ivrsAssumed: !amdUnits && amdHost,
  };
};
