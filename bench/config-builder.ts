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
  // Standard list: PCIe at 0x40 (when PCIe) -> power management at 0x80 -> MSI at 0x90.
  put16(b, 0x06, 0x0010);
  b[0x34] = o.pcieType !== undefined ? 0x40 : 0x80;
  if (o.pcieType !== undefined) {
    b[0x40] = 0x10;
    b[0x41] = 0x80;
    put16(b, 0x42, 0x0002 | ((o.pcieType & 0xf) << 4) | (o.pcieType === 4 || o.pcieType === 6 ? 0x100 : 0));
    put32(b, 0x44, 1 << 28); // DevCap: FLR
  }
  b[0x80] = 0x01;
  b[0x81] = 0x90;
  put16(b, 0x82, 0x0003);
  b[0x90] = 0x05;
  b[0x91] = 0x00;
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
