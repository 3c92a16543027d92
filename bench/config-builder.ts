import { putU16, putU32 } from '../model/config-space.js';
// Build PCI config space bytes the way real devices lay them out (pci_regs.h offsets): a type 0 or
// type 1 header, a standard capability list from 0x34 (PCIe capability first), and an extended list
// from 0x100 (AER, then ACS / ARI / SR-IOV as asked). Used by the bench generator and by tests.

export interface ConfigOptions {
  vendor: number;
  device: number;
  classCode: number;
  revision?: number;
  bridge?: boolean;
  multifunction?: boolean;
  subsystem?: [number, number];
  primary?: number;
  secondary?: number;
  subordinate?: number;
  /** PCIe port type code (0 endpoint, 4 root port, 5 upstream, 6 downstream, 7 PCIe-to-PCI, 9 RCiEP); absent: conventional PCI. */
  pcieType?: number;
  acs?: { cap: number; ctrl: number };
  ari?: { nextFunction: number };
  sriov?: { total: number; num: number; offset: number; stride: number; vfDevice: number; enabled?: boolean };
  /** Bytes to return: 64 (unprivileged read), 256, or 4096 (default for PCIe, 256 otherwise). */
  size?: number;
  /** PCIe Device Capabilities FLR bit (default: set). */
  flr?: boolean;
  /** The power management capability (default: present, No_Soft_Reset clear); false: none. */
  pm?: { noSoftReset?: boolean; version?: number } | false;
  /** An Advanced Features capability with these bits. */
  af?: { tp: boolean; flr: boolean };
  /** A PCIe slot (root or downstream port) that is hot-plug capable. */
  slotHotplug?: boolean;
  /** A CXL port: DVSEC port extensions, Port Control's Unmask SBR bit. */
  cxlPort?: { sbrUnmasked: boolean };
  /** BAR 0 (default 0xfe000000, a 32-bit memory BAR, for an endpoint; none for a bridge); 0: unassigned. */
  bar0?: number;
}

const put16 = putU16;
const put32 = putU32;

export const buildConfig = (o: ConfigOptions): Uint8Array => {
  const b = new Uint8Array(4096);
  put16(b, 0x00, o.vendor);
  put16(b, 0x02, o.device);
  put16(b, 0x04, 0x0406); // memory + bus master, INTx disabled
  b[0x08] = o.revision ?? 1;
  b[0x09] = o.classCode & 0xff;
  b[0x0a] = (o.classCode >> 8) & 0xff;
  b[0x0b] = (o.classCode >> 16) & 0xff;
  b[0x0e] = (o.bridge ? 1 : 0) | (o.multifunction ? 0x80 : 0);
  if (o.bridge) {
    b[0x18] = o.primary ?? 0;
    b[0x19] = o.secondary ?? 0;
    b[0x1a] = o.subordinate ?? 0;
  } else {
    put16(b, 0x2c, o.subsystem?.[0] ?? o.vendor);
    put16(b, 0x2e, o.subsystem?.[1] ?? o.device);
  }
  put32(b, 0x10, o.bar0 ?? (o.bridge ? 0 : 0xfe000000));
  // Standard list from 0x34: PCIe at 0x40 (when PCIe), power management at 0x80, MSI at 0x90, Advanced Features at 0xa0.
  put16(b, 0x06, 0x0010);
  const caps: { at: number; fill: () => void }[] = [];
  if (o.pcieType !== undefined) {
    caps.push({
      at: 0x40,
      fill: () => {
        b[0x40] = 0x10;
        const slot = o.pcieType === 4 || o.pcieType === 6;
        put16(b, 0x42, 0x0002 | ((o.pcieType! & 0xf) << 4) | (slot ? 0x100 : 0));
        put32(b, 0x44, (o.flr ?? true) ? 1 << 28 : 0); // DevCap: FLR
        if (slot) put32(b, 0x54, o.slotHotplug ? 0x40 : 0); // SltCap: Hot-Plug Capable
      },
    });
  }
  if (o.pm !== false) {
    const pm = o.pm ?? {};
    caps.push({
      at: 0x80,
      fill: () => {
        b[0x80] = 0x01;
        put16(b, 0x82, pm.version ?? 3);
        put16(b, 0x84, pm.noSoftReset ? 0x0008 : 0);
      },
    });
  }
  caps.push({
    at: 0x90,
    fill: () => {
      b[0x90] = 0x05;
    },
  });
  if (o.af) {
    const af = o.af;
    caps.push({
      at: 0xa0,
      fill: () => {
        b[0xa0] = 0x13;
        b[0xa2] = 0x06;
        b[0xa3] = (af.tp ? 1 : 0) | (af.flr ? 2 : 0);
      },
    });
  }
  b[0x34] = caps[0]!.at;
  caps.forEach((c, i) => {
    c.fill();
    b[c.at + 1] = caps[i + 1]?.at ?? 0;
  });
  if (o.pcieType !== undefined) {
    const ext: { id: number; size: number; fill: (at: number) => void }[] = [{ id: 0x01, size: 0x40, fill: () => {} }];
    if (o.acs)
      ext.push({
        id: 0x0d,
        size: 0x10,
        fill: (at) => {
          put16(b, at + 4, o.acs!.cap);
          put16(b, at + 6, o.acs!.ctrl);
        },
      });
    if (o.cxlPort)
      ext.push({
        id: 0x23,
        size: 0x28,
        fill: (at) => {
          put32(b, at + 4, 0x1e98 | (1 << 16) | (0x28 << 20)); // DVSEC header 1: CXL, revision 1, length
          put16(b, at + 8, 3); // DVSEC id: port extensions
          put16(b, at + 0x0c, o.cxlPort!.sbrUnmasked ? 1 : 0);
        },
      });
    if (o.ari) ext.push({ id: 0x0e, size: 0x08, fill: (at) => put16(b, at + 4, (o.ari!.nextFunction & 0xff) << 8) });
    if (o.sriov) {
      const s = o.sriov;
      ext.push({
        id: 0x10,
        size: 0x40,
        fill: (at) => {
          put16(b, at + 0x08, (s.enabled ?? s.num > 0) ? 1 : 0);
          put16(b, at + 0x0c, s.total);
          put16(b, at + 0x0e, s.total);
          put16(b, at + 0x10, s.num);
          put16(b, at + 0x14, s.offset);
          put16(b, at + 0x16, s.stride);
          put16(b, at + 0x1a, s.vfDevice);
        },
      });
    }
    let at = 0x100;
    ext.forEach((c, i) => {
      const next = i + 1 < ext.length ? at + c.size : 0;
      put32(b, at, c.id | (1 << 16) | (next << 20));
      c.fill(at);
      at = next;
    });
  }
  const size = o.size ?? (o.pcieType !== undefined ? 4096 : 256);
  return b.slice(0, size);
};
