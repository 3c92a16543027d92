// Read what each IOMMU unit's registers say (for contexts' IOVA ranges): Intel VT-d units expose cap/ecap
// under /sys/class/iommu/dmarN/intel-iommu/. Only the read; groups/iova.ts decodes (unitCapsOf).

import type { HostSnapshot, IommuUnit } from '../model/device.js';
import { intelIommuRegister } from './paths.js';
import type { SysfsPort } from './port.js';

export interface IommuUnitRegisters {
  name: string;
  kind: IommuUnit['kind'];
  /** Register texts as sysfs prints them; null when the unit exposes none (AMD, SMMU) or they are unreadable. */
  cap: string | null;
  ecap: string | null;
}

const readOrNull = (port: SysfsPort, rel: string): string | null => {
  try {
    return port.kind(rel) === null ? null : port.readText(rel);
  } catch {
    return null;
  }
};

export const readIommuRegisters = (port: SysfsPort, snapshot: Pick<HostSnapshot, 'iommuUnits'>): IommuUnitRegisters[] =>
  [...snapshot.iommuUnits.values()].map((unit) => ({
    name: unit.name,
    kind: unit.kind,
    cap: unit.kind === 'intel' ? readOrNull(port, intelIommuRegister(unit.name, 'cap')) : null,
    ecap: unit.kind === 'intel' ? readOrNull(port, intelIommuRegister(unit.name, 'ecap')) : null,
  }));
