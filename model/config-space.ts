// Parse PCI configuration space as the kernel does (drivers/pci/pci.c: __pci_find_next_cap_ttl,
// pci_find_next_ext_capability; include/uapi/linux/pci_regs.h). Pure: bytes in, data out.
// Hostile input (pointer loops, pointers past the buffer) becomes a problem entry, never a throw.

export const PCI_CFG_SPACE_SIZE = 256;
export const PCI_CFG_SPACE_EXP_SIZE = 4096;
const PCI_FIND_CAP_TTL = 48;

export const ACS_BITS = { SV: 0x01, TB: 0x02, RR: 0x04, CR: 0x08, UF: 0x10, EC: 0x20, DT: 0x40 } as const;
export type AcsBit = keyof typeof ACS_BITS;

export const CAP_NAMES: Record<number, string> = {
  1: 'Power Management',
  2: 'AGP',
  3: 'Vital Product Data',
  4: 'Slot Identification',
  5: 'MSI',
  6: 'CompactPCI Hot Swap',
  7: 'PCI-X',
  8: 'HyperTransport',
  9: 'Vendor Specific',
  10: 'Debug Port',
  11: 'CompactPCI Central Resource Control',
  12: 'PCI Standard Hot-Plug Controller',
  13: 'Bridge Subsystem Vendor ID',
  14: 'AGP 8x',
  15: 'Secure Device',
  16: 'PCI Express',
  17: 'MSI-X',
  18: 'SATA Configuration',
  19: 'Advanced Features',
  20: 'Enhanced Allocation',
  21: 'Flattening Portal Bridge',
};

export const EXT_CAP_NAMES: Record<number, string> = {
  1: 'Advanced Error Reporting',
  2: 'Virtual Channel',
  3: 'Device Serial Number',
  4: 'Power Budgeting',
  5: 'Root Complex Link Declaration',
  6: 'Root Complex Internal Link Control',
  7: 'Root Complex Event Collector Endpoint Association',
  8: 'Multi-Function Virtual Channel',
  9: 'Virtual Channel (MFVC)',
  10: 'Root Complex Register Block',
  11: 'Vendor-Specific Extended',
  12: 'Configuration Access Correlation',
  13: 'Access Control Services',
  14: 'Alternative Routing-ID Interpretation',
  15: 'Address Translation Services',
  16: 'Single Root I/O Virtualization',
  17: 'Multi-Root I/O Virtualization',
  18: 'Multicast',
  19: 'Page Request Interface',
  20: 'AMD Reserved',
  21: 'Resizable BAR',
  22: 'Dynamic Power Allocation',
  23: 'TPH Requester',
  24: 'Latency Tolerance Reporting',
  25: 'Secondary PCI Express',
  26: 'Protocol Multiplexing',
  27: 'Process Address Space ID',
  28: 'LN Requester',
  29: 'Downstream Port Containment',
  30: 'L1 PM Substates',
  31: 'Precision Time Measurement',
  32: 'M-PCIe',
  33: 'FRS Queueing',
  34: 'Readiness Time Reporting',
  35: 'Designated Vendor-Specific',
  36: 'VF Resizable BAR',
  37: 'Data Link Feature',
  38: 'Physical Layer 16.0 GT/s',
  39: 'Lane Margining at the Receiver',
  40: 'Hierarchy ID',
  41: 'Native PCIe Enclosure Management',
  42: 'Physical Layer 32.0 GT/s',
  43: 'Alternate Protocol',
  44: 'System Firmware Intermediary',
  45: 'Shadow Functions',
  46: 'Data Object Exchange',
  47: 'Device 3',
  48: 'Integrity and Data Encryption',
  49: 'Physical Layer 64.0 GT/s',
  50: 'Flit Logging',
  51: 'Flit Performance Measurement',
  52: 'Flit Error Injection',
};

export type PortType =
  | 'endpoint'
  | 'legacy-endpoint'
  | 'root-port'
  | 'upstream-port'
  | 'downstream-port'
  | 'pcie-to-pci-bridge'
  | 'pci-to-pcie-bridge'
  | 'rciep'
  | 'rc-event-collector'
  | 'conventional'
  | 'unknown';

const PORT_TYPES: Record<number, PortType> = {
  0: 'endpoint',
  1: 'legacy-endpoint',
  4: 'root-port',
  5: 'upstream-port',
  6: 'downstream-port',
  7: 'pcie-to-pci-bridge',
  8: 'pci-to-pcie-bridge',
  9: 'rciep',
  10: 'rc-event-collector',
};

export type HeaderLayout = 'normal' | 'bridge' | 'cardbus' | 'unknown';

export interface Capability {
  id: number;
  name: string;
  offset: number;
}

export interface ExtCapability extends Capability {
  version: number;
}

export interface AcsInfo {
  offset: number;
  cap: number;
  ctrl: number;
  capBits: AcsBit[];
  ctrlBits: AcsBit[];
}

export interface SriovInfo {
  offset: number;
  initialVfs: number;
  totalVfs: number;
  numVfs: number;
  firstVfOffset: number;
  vfStride: number;
  vfDeviceId: string;
  vfEnabled: boolean;
}

export interface PcieInfo {
  offset: number;
  version: number;
  portTypeCode: number;
  slotImplemented: boolean;
  /** Device Capabilities: Function Level Reset Capability (bit 28). */
  flr: boolean;
  /** Slot Capabilities (only when a slot is implemented): Hot-Plug Capable (bit 6). */
  slotHotplug: boolean;
}

/**
 * What config space says about resetting the function (drivers/pci/pci.c pcie_reset_flr, pci_af_flr,
 * pci_pm_reset, cxl_reset_bus_function): the facts, not the verdict; groups/reset.ts decides.
 */
export interface ResetCaps {
  /** PCIe Device Capabilities FLR bit. */
  flr: boolean;
  /** Advanced Features capability with Transactions Pending and FLR (conventional PCI's FLR). */
  afFlr: boolean;
  /**
   * The power management capability as the kernel keeps it (pci_pm_init: absent when its version
   * is above 3): `soft-reset` when PMCSR's No_Soft_Reset is clear, so D3hot->D0 resets the function.
   */
  pm: 'soft-reset' | 'no-soft-reset' | null;
  /** A bridge whose PCIe slot is hot-plug capable (pciehp can reset the slot). */
  hotplugSlot: boolean;
  /** A CXL port (DVSEC "port extensions"): whether its Port Control unmasks Secondary Bus Reset. */
  cxlPort: { sbrUnmasked: boolean } | null;
  /** BAR 0 holds an address (pci_resource_start(dev, 0) != 0; the NVMe reset quirk needs it). */
  bar0: boolean;
}

export interface ConfigProblem {
  code: 'short-config' | 'cap-loop' | 'cap-out-of-range' | 'ext-cap-loop' | 'ext-cap-out-of-range' | 'no-config' | 'bad-header';
  message: string;
}

export interface ConfigSpace {
  size: number;
  vendorId: number;
  deviceId: number;
  revision: number;
  classCode: number;
  headerType: number;
  layout: HeaderLayout;
  multifunction: boolean;
  subsystemVendorId: number | null;
  subsystemDeviceId: number | null;
  primaryBus: number | null;
  secondaryBus: number | null;
  subordinateBus: number | null;
  capabilities: Capability[];
  extCapabilities: ExtCapability[];
  /** false when the bytes read stop before the extended space (unprivileged read or conventional device). */
  extendedReadable: boolean;
  /** false when the bytes read stop before the capability list (64-byte unprivileged read). */
  capsReadable: boolean;
  pcie: PcieInfo | null;
  portType: PortType;
  acs: AcsInfo | null;
  ari: { offset: number; nextFunction: number } | null;
  sriov: SriovInfo | null;
  /** Null when the bytes read stop before the capability list (nothing about resets can be known). */
  reset: ResetCaps | null;
  problems: ConfigProblem[];
}

const u16 = (b: Uint8Array, o: number): number => (o + 1 < b.length ? b[o]! | (b[o + 1]! << 8) : -1);
const u32 = (b: Uint8Array, o: number): number => (o + 3 < b.length ? (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0 : -1);

/** Little-endian stores into config bytes (the fixture writers, the lspci importer, crafted test bytes). */
export const putU16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v & 0xff;
  b[o + 1] = (v >> 8) & 0xff;
};
export const putU32 = (b: Uint8Array, o: number, v: number): void => {
  putU16(b, o, v & 0xffff);
  putU16(b, o + 2, (v >>> 16) & 0xffff);
};

export const hex = (n: number, width: number): string => `0x${n.toString(16).padStart(width, '0')}`;

export const acsBitNames = (value: number): AcsBit[] => (Object.keys(ACS_BITS) as AcsBit[]).filter((name) => (value & ACS_BITS[name]) !== 0);

/** Bytes up to the end of the type-0 subsystem ids (0x2c-0x2f): what the standard header gives. */
export const HEADER_BYTES = 0x30;

/** Header type 0 (an endpoint), whose subsystem ids sit at 0x2c/0x2e; bytes at least HEADER_BYTES long. */
export const hasNormalHeader = (bytes: Uint8Array): boolean => bytes.length >= HEADER_BYTES && (bytes[0x0e]! & 0x7f) === 0;

export const parseConfigSpace = (bytes: Uint8Array): ConfigSpace => {
  const problems: ConfigProblem[] = [];
  const size = bytes.length;
  if (size < 64) {
    problems.push({ code: 'short-config', message: `config space is ${size} bytes; the 64-byte header is incomplete` });
  }
  const headerType = size > 0x0e ? bytes[0x0e]! : 0;
  const layoutCode = headerType & 0x7f;
  const layout: HeaderLayout = layoutCode === 0 ? 'normal' : layoutCode === 1 ? 'bridge' : layoutCode === 2 ? 'cardbus' : 'unknown';
  if (layout === 'unknown' && size >= 64) {
    problems.push({ code: 'bad-header', message: `header type 0x${layoutCode.toString(16)} is not normal, bridge or CardBus` });
  }
  const byte = (o: number): number | null => (o < size ? bytes[o]! : null);
  // A 64-byte read ends where the capability area begins (0x40): nothing of the list is readable.
  const capsReadable = size > 64;
  const extendedReadable = size > PCI_CFG_SPACE_SIZE;
  if (size > 0 && size <= 64) {
    problems.push({
      code: 'short-config',
      message: `config space is ${size} bytes (unprivileged read?): capabilities, PCIe port type and ACS cannot be known`,
    });
  }

  const cs: ConfigSpace = {
    size,
    vendorId: Math.max(u16(bytes, 0), 0),
    deviceId: Math.max(u16(bytes, 2), 0),
    revision: byte(0x08) ?? 0,
    classCode: size > 0x0b ? (bytes[0x0b]! << 16) | (bytes[0x0a]! << 8) | bytes[0x09]! : 0,
    headerType,
    layout,
    multifunction: (headerType & 0x80) !== 0,
    subsystemVendorId: null,
    subsystemDeviceId: null,
    primaryBus: null,
    secondaryBus: null,
    subordinateBus: null,
    capabilities: [],
    extCapabilities: [],
    extendedReadable,
    capsReadable,
    pcie: null,
    portType: 'unknown',
    acs: null,
    ari: null,
    sriov: null,
    reset: null,
    problems,
  };
  if (layout === 'normal' && size >= 0x30) {
    cs.subsystemVendorId = u16(bytes, 0x2c);
    cs.subsystemDeviceId = u16(bytes, 0x2e);
  }
  if ((layout === 'bridge' || layout === 'cardbus') && size > 0x1a) {
    cs.primaryBus = bytes[0x18]!;
    cs.secondaryBus = bytes[0x19]!;
    cs.subordinateBus = bytes[0x1a]!;
  }

  // Standard capability list (status bit 4 says it exists).
  const status = u16(bytes, 0x06);
  if (capsReadable && status >= 0 && (status & 0x10) !== 0) {
    const start = layout === 'cardbus' ? 0x14 : 0x34;
    let pos = byte(start) ?? 0;
    const seen = new Set<number>();
    let ttl = PCI_FIND_CAP_TTL;
    while (ttl-- > 0) {
      if (pos < 0x40) break;
      pos &= ~3;
      if (pos + 1 >= size) {
        problems.push({ code: 'cap-out-of-range', message: `capability pointer ${hex(pos, 2)} is outside the ${size} bytes read` });
        break;
      }
      if (seen.has(pos)) {
        problems.push({ code: 'cap-loop', message: `capability list loops back to ${hex(pos, 2)}` });
        break;
      }
      seen.add(pos);
      const id = bytes[pos]!;
      if (id === 0xff) break;
      cs.capabilities.push({ id, name: CAP_NAMES[id] ?? `Unknown (${hex(id, 2)})`, offset: pos });
      pos = bytes[pos + 1]!;
    }
    if (ttl < 0 && pos >= 0x40) problems.push({ code: 'cap-loop', message: `capability list longer than ${PCI_FIND_CAP_TTL} entries` });
  }

  const express = cs.capabilities.find((c) => c.id === 0x10);
  if (express) {
    const flags = u16(bytes, express.offset + 2);
    const devcap = u32(bytes, express.offset + 4);
    if (flags >= 0) {
      const code = (flags >> 4) & 0xf;
      cs.pcie = {
        offset: express.offset,
        version: flags & 0xf,
        portTypeCode: code,
        slotImplemented: (flags & 0x100) !== 0,
        flr: devcap >= 0 && (devcap & (1 << 28)) !== 0,
        slotHotplug: false,
      };
      const sltcap = (flags & 0x100) !== 0 ? u32(bytes, express.offset + 0x14) : -1;
      cs.pcie.slotHotplug = sltcap >= 0 && (sltcap & 0x40) !== 0;
      cs.portType = PORT_TYPES[code] ?? 'unknown';
    }
  } else if (capsReadable) {
    cs.portType = 'conventional';
  }

  if (cs.pcie && !extendedReadable && size > 64) {
    problems.push({
      code: 'short-config',
      message: `PCIe device but only ${size} bytes of config space were read: extended capabilities (ACS, ARI, SR-IOV) cannot be known`,
    });
  }

  // Extended capabilities: only PCIe devices (and only when the read went past 256 bytes).
  if (extendedReadable && cs.pcie) {
    let pos = PCI_CFG_SPACE_SIZE;
    let ttl = (PCI_CFG_SPACE_EXP_SIZE - PCI_CFG_SPACE_SIZE) / 8;
    const seen = new Set<number>();
    let header = u32(bytes, pos);
    if (header !== 0 && header !== 0xffffffff && header !== -1) {
      while (ttl-- > 0) {
        if (seen.has(pos)) {
          problems.push({ code: 'ext-cap-loop', message: `extended capability list loops back to ${hex(pos, 3)}` });
          break;
        }
        seen.add(pos);
        const id = header & 0xffff;
        cs.extCapabilities.push({ id, name: EXT_CAP_NAMES[id] ?? `Unknown (${hex(id, 4)})`, offset: pos, version: (header >>> 16) & 0xf });
        const next = (header >>> 20) & 0xffc;
        if (next < PCI_CFG_SPACE_SIZE) break;
        if (next + 3 >= size) {
          problems.push({ code: 'ext-cap-out-of-range', message: `extended capability pointer ${hex(next, 3)} is outside the ${size} bytes read` });
          break;
        }
        pos = next;
        header = u32(bytes, pos);
      }
    }
  }

  for (const ext of cs.extCapabilities) {
    if (ext.id === 0x0d && !cs.acs && ext.offset + 7 < size) {
      const cap = u16(bytes, ext.offset + 4);
      const ctrl = u16(bytes, ext.offset + 6);
      cs.acs = { offset: ext.offset, cap, ctrl, capBits: acsBitNames(cap), ctrlBits: acsBitNames(ctrl) };
    } else if (ext.id === 0x0e && !cs.ari && ext.offset + 5 < size) {
      cs.ari = { offset: ext.offset, nextFunction: (u16(bytes, ext.offset + 4) >> 8) & 0xff };
    } else if (ext.id === 0x10 && !cs.sriov && ext.offset + 0x1b < size) {
      const o = ext.offset;
      cs.sriov = {
        offset: o,
        initialVfs: u16(bytes, o + 0x0c),
        totalVfs: u16(bytes, o + 0x0e),
        numVfs: u16(bytes, o + 0x10),
        firstVfOffset: u16(bytes, o + 0x14),
        vfStride: u16(bytes, o + 0x16),
        vfDeviceId: hex(u16(bytes, o + 0x1a), 4),
        vfEnabled: (u16(bytes, o + 0x08) & 0x1) !== 0,
      };
    }
  }
  if (capsReadable) cs.reset = resetCapsOf(bytes, cs);
  return cs;
};

const CXL_VENDOR = 0x1e98;
const CXL_DVSEC_PORT_EXTENSIONS = 3;

const resetCapsOf = (bytes: Uint8Array, cs: ConfigSpace): ResetCaps => {
  const pmCap = cs.capabilities.find((c) => c.id === 0x01);
  let pm: ResetCaps['pm'] = null;
  if (pmCap) {
    const pmc = u16(bytes, pmCap.offset + 2);
    const pmcsr = u16(bytes, pmCap.offset + 4);
    // pci_pm_init() ignores a capability of an unknown version; then there is no pm_cap to reset with.
    if (pmc >= 0 && (pmc & 0x7) <= 3 && pmcsr >= 0) pm = (pmcsr & 0x08) !== 0 ? 'no-soft-reset' : 'soft-reset';
  }
  const af = cs.capabilities.find((c) => c.id === 0x13);
  const afCap = af ? (bytes[af.offset + 3] ?? 0) : 0;
  let cxlPort: ResetCaps['cxlPort'] = null;
  for (const ext of cs.extCapabilities) {
    if (ext.id !== 0x23 || ext.offset + 0x0d >= bytes.length) continue;
    if ((u32(bytes, ext.offset + 4) & 0xffff) === CXL_VENDOR && (u16(bytes, ext.offset + 8) & 0xffff) === CXL_DVSEC_PORT_EXTENSIONS) {
      cxlPort = { sbrUnmasked: (u16(bytes, ext.offset + 0x0c) & 0x1) !== 0 };
      break;
    }
  }
  return {
    flr: cs.pcie?.flr ?? false,
    afFlr: (afCap & 0x01) !== 0 && (afCap & 0x02) !== 0,
    pm,
    hotplugSlot: cs.pcie?.slotHotplug ?? false,
    cxlPort,
    bar0: cs.layout === 'normal' || cs.layout === 'bridge' ? barAssigned(bytes) : false,
  };
};

// BAR 0 (and BAR 1 for a 64-bit memory BAR) holds an address.
const barAssigned = (bytes: Uint8Array): boolean => {
  const lo = u32(bytes, 0x10);
  if (lo < 0) return false;
  if (lo & 0x1) return (lo & ~0x3) !== 0;
  const hi = (lo & 0x6) === 0x4 ? u32(bytes, 0x14) : 0;
  return (lo & ~0xf) !== 0 || hi > 0;
};
