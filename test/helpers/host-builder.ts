import { type Bdf, busIdOf, parseBdf, splitBdf } from '../../model/bdf.js';
import type { HostSnapshot, KernelGroup, PciDevice } from '../../model/device.js';

// In-memory HostSnapshots for pure-core tests (no disk).
export const device = (bdfText: string, over: Partial<PciDevice> = {}): PciDevice => {
  const bdf = parseBdf(bdfText);
  const p = splitBdf(bdf)!;
  return {
    bdf,
    domain: p.domain,
    bus: p.bus,
    slot: p.device,
    function: p.fn,
    vendor: '0x8086',
    device: '0x10d3',
    subsystemVendor: null,
    subsystemDevice: null,
    class: '0x020000',
    revision: '0x00',
    vendorName: null,
    deviceName: null,
    className: null,
    driver: null,
    driverOverride: null,
    vfioDriver: false,
    kernelGroup: null,
    iommu: 'dmar0',
    numaNode: null,
    headerType: 0,
    headerLayout: 'normal',
    isBridge: false,
    portType: 'endpoint',
    pcieTypeCode: 0,
    multifunction: false,
    secondaryBus: null,
    subordinateBus: null,
    acs: null,
    acsKnown: true,
    ari: false,
    ariEnabled: null,
    sriov: null,
    physfn: null,
    virtfns: [],
    isVirtfn: false,
    resetMethods: null,
    resetFile: false,
    resetCaps: { flr: false, afFlr: false, pm: null, hotplugSlot: false, cxlPort: null, bar0: true },
    bootVga: null,
    parent: null,
    busId: busIdOf(p),
    rootBus: `pci${busIdOf(p)}`,
    hostBridgeDevice: null,
    sysfsPath: `sys/devices/pci0000:00/${bdf}`,
    configSize: 4096,
    capabilities: [],
    extCapabilities: [],
    problems: [],
    ...over,
  };
};

export const host = (devices: PciDevice[]): HostSnapshot => {
  const map = new Map<Bdf, PciDevice>(devices.map((d) => [d.bdf, d]));
  const kernelGroups = new Map<string, KernelGroup>();
  for (const d of devices) {
    if (d.kernelGroup === null) continue;
    const g = kernelGroups.get(d.kernelGroup) ?? { id: d.kernelGroup, devices: [], type: 'DMA', reservedRegions: [] };
    g.devices.push(d.bdf);
    kernelGroups.set(d.kernelGroup, g);
  }
  return { root: '/fake', devices: map, kernelGroups, iommuUnits: new Map(), config: new Map(), iommuEnabled: true, driversAutoprobe: true, problems: [] };
};
