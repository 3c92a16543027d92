// Facts about PCI drivers that every layer judges devices by (the viability rule in groups/viability.ts
// is built from these; the fixture kernel models the kernel's DMA-ownership check with them).

/** The driver isogroup hands devices to. */
export const VFIO_DRIVER = 'vfio-pci';

/** vfio-pci and its variant drivers (vfio-pci-core users name themselves vfio-*). */
export const isVfioDriverName = (driver: string | null): boolean => driver?.startsWith('vfio') === true;

/** Drivers that set driver_managed_dma: they never claim a group's DMA ownership. */
export const isDmaManagedDriver = (driver: string): boolean => isVfioDriverName(driver) || driver === 'pci-stub' || driver === 'pcieport';
