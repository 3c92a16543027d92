import { PCI_CFG_SPACE_EXP_SIZE, PCI_CFG_SPACE_SIZE } from '../model/config-space.js';

// Config space for a device the fixture kernel hot-adds: a type 0 header, with a PCIe endpoint
// capability when it lands behind a PCIe port, none when behind a conventional bridge.

export interface SynthSpec {
  vendor: number;
  device: number;
  classCode: number;
  pcie: boolean;
  multifunction?: boolean;
}

export const synthConfig = (spec: SynthSpec): Uint8Array => {
  const b = new Uint8Array(spec.pcie ? PCI_CFG_SPACE_EXP_SIZE : PCI_CFG_SPACE_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint16(0x00, spec.vendor, true);
  dv.setUint16(0x02, spec.device, true);
  dv.setUint16(0x06, spec.pcie ? 0x0010 : 0x0000, true); // status: capability list
  b[0x08] = 0x01; // revision
  b[0x09] = spec.classCode & 0xff;
  b[0x0a] = (spec.classCode >> 8) & 0xff;
  b[0x0b] = (spec.classCode >> 16) & 0xff;
  b[0x0e] = spec.multifunction ? 0x80 : 0x00;
  dv.setUint16(0x2c, spec.vendor, true);
  dv.setUint16(0x2e, 0x0001, true);
  if (spec.pcie) {
    b[0x34] = 0x40;
    b[0x40] = 0x10; // PCI Express capability
    b[0x41] = 0x00;
    dv.setUint16(0x42, 0x0002, true); // version 2, endpoint (type 0)
  }
  return b;
};

/** Remove the SR-IOV extended capability from a copy of a PF's config space (a VF has none). */
export const vfConfigFrom = (pf: Uint8Array, vfDeviceId: number): Uint8Array => {
  const b = new Uint8Array(pf);
  const dv = new DataView(b.buffer);
  dv.setUint16(0x02, vfDeviceId, true);
  b[0x0e] = b[0x0e]! & 0x7f;
  if (b.length < 0x104) return b;
  let prev = -1;
  let off = 0x100;
  const seen = new Set<number>();
  while (off >= 0x100 && off + 4 <= b.length && !seen.has(off)) {
    seen.add(off);
    const header = dv.getUint32(off, true);
    if (header === 0) break;
    const id = header & 0xffff;
    const next = (header >>> 20) & 0xffc;
    if (id === 0x0010) {
      if (prev >= 0) {
        const ph = dv.getUint32(prev, true);
        dv.setUint32(prev, ((ph & 0x000fffff) | (next << 20)) >>> 0, true);
      } else {
        // First in the chain: keep the link, blank the capability id.
        dv.setUint32(off, ((header & 0xfff00000) | 0x0000) >>> 0, true);
      }
      break;
    }
    prev = off;
    off = next;
  }
  return b;
};
