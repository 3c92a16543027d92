// Read what each IOMMU unit's registers say about its address space (for contexts' IOVA ranges):
// Intel VT-d units expose cap/ecap under /sys/class/iommu/dmarN/intel-iommu/. Other kinds get the
// default aperture. Decoding is pure (groups/iova.ts); this is only the read.

import { decodeIntelCap, defaultUnitCaps, type IommuUnitCaps } from '../groups/iova.js';
import type { HostSnapshot } from '../model/device.js';
import type { SysfsPort } from './port.js';

export const readIommuUnitCaps = (port: SysfsPort, snapshot: Pick<HostSnapshot, 'iommuUnits'>): Map<string, IommuUnitCaps> => {
  const out = new Map<string, IommuUnitCaps>();
  for (const unit of snapshot.iommuUnits.values()) {
    const dir = `sys/class/iommu/${unit.name}/intel-iommu`;
    if (unit.kind === 'intel' && port.kind(`${dir}/cap`) !== null) {
      try {
        const ecap = port.kind(`${dir}/ecap`) !== null ? port.readText(`${dir}/ecap`) : null;
        out.set(unit.name, decodeIntelCap(unit.name, port.readText(`${dir}/cap`), ecap));
        continue;
      } catch {
        // Unreadable or garbage registers: fall back to the default aperture (the view notes it).
      }
    }
    out.set(unit.name, defaultUnitCaps(unit.name, unit.kind));
  }
  return out;
};
