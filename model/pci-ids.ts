// The pci.ids database (https://pci-ids.ucw.cz) as shipped by hwdata/pciutils; never bundled. Pure:
// parsing and lookup (os/pci-ids.ts reads the host's file).
export interface PciIds {
  source: string;
  vendors: Map<number, { name: string; devices: Map<number, { name: string; subsystems: Map<string, string> }> }>;
  classes: Map<number, { name: string; subclasses: Map<number, string> }>;
}

export const parsePciIds = (text: string, source = 'inline'): PciIds => {
  const ids: PciIds = { source, vendors: new Map(), classes: new Map() };
  let vendor: { name: string; devices: Map<number, { name: string; subsystems: Map<string, string> }> } | null = null;
  let device: { name: string; subsystems: Map<string, string> } | null = null;
  let klass: { name: string; subclasses: Map<number, string> } | null = null;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('C ')) {
      const m = /^C ([0-9a-fA-F]{2})\s+(.*)$/.exec(line);
      vendor = null;
      device = null;
      klass = m ? { name: m[2]!.trim(), subclasses: new Map() } : null;
      if (m && klass) ids.classes.set(parseInt(m[1]!, 16), klass);
      continue;
    }
    if (line.startsWith('\t\t')) {
      const m = /^\t\t([0-9a-fA-F]{4}) ([0-9a-fA-F]{4})\s+(.*)$/.exec(line);
      if (m && device) device.subsystems.set(`${m[1]!.toLowerCase()}:${m[2]!.toLowerCase()}`, m[3]!.trim());
      continue;
    }
    if (line.startsWith('\t')) {
      if (klass) {
        const m = /^\t([0-9a-fA-F]{2})\s+(.*)$/.exec(line);
        if (m) klass.subclasses.set(parseInt(m[1]!, 16), m[2]!.trim());
        continue;
      }
      const m = /^\t([0-9a-fA-F]{4})\s+(.*)$/.exec(line);
      if (m && vendor) {
        device = { name: m[2]!.trim(), subsystems: new Map() };
        vendor.devices.set(parseInt(m[1]!, 16), device);
      }
      continue;
    }
    const m = /^([0-9a-fA-F]{4})\s+(.*)$/.exec(line);
    klass = null;
    device = null;
    if (m) {
      vendor = { name: m[2]!.trim(), devices: new Map() };
      ids.vendors.set(parseInt(m[1]!, 16), vendor);
    }
  }
  return ids;
};

export const lookupNames = (
  ids: PciIds,
  vendor: string,
  device: string,
  klass: string,
  subVendor: string | null,
  subDevice: string | null,
): { vendor: string | null; device: string | null; className: string | null; subsystem: string | null } => {
  const v = ids.vendors.get(parseInt(vendor, 16));
  const d = v?.devices.get(parseInt(device, 16));
  const c = parseInt(klass, 16);
  const cls = ids.classes.get((c >> 16) & 0xff);
  const sub = subVendor && subDevice ? (d?.subsystems.get(`${subVendor.slice(2)}:${subDevice.slice(2)}`) ?? null) : null;
  return {
    vendor: v?.name ?? null,
    device: d?.name ?? null,
    className: cls ? (cls.subclasses.get((c >> 8) & 0xff) ?? cls.name) : null,
    subsystem: sub,
  };
};
