// The VFIO user API as isogroup uses it (include/uapi/linux/vfio.h), behind one interface that two
// backends implement: the real kernel (libc open/ioctl through koffi, sysfs/vfio-kernel.ts) and the
// fixture kernel's simulation (sysfs/sim/). Errors are IsogroupError with details.errno set to the
// kernel's errno name (EPERM, EBUSY, ENOENT, EINVAL, ...), as NOTES.md recorded them.

export interface VfioGroupStatus {
  /** VFIO_GROUP_FLAGS_VIABLE */
  viable: boolean;
  /** VFIO_GROUP_FLAGS_CONTAINER_SET */
  containerSet: boolean;
}

export interface IovaRange {
  start: bigint;
  end: bigint;
}

export interface VfioContainerHandle {
  /** The open file descriptor (real backend) or null (simulation). */
  readonly fd: number | null;
  /** VFIO_GET_API_VERSION */
  apiVersion(): number;
  /** VFIO_CHECK_EXTENSION */
  checkExtension(extension: number): boolean;
  /** VFIO_SET_IOMMU; needs at least one group attached first. */
  setIommu(type: 'type1v2' | 'type1'): void;
  /** VFIO_IOMMU_GET_INFO with VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE; after setIommu. */
  iovaRanges(): IovaRange[];
  close(): void;
}

/** VFIO_DEVICE_GET_INFO, the parts isogroup reads. */
export interface VfioDeviceInfo {
  flags: number;
  /** VFIO_DEVICE_FLAGS_RESET: the kernel reset the function alone when it was opened, and can again (VFIO_DEVICE_RESET). */
  reset: boolean;
  /** VFIO_DEVICE_FLAGS_PCI */
  pci: boolean;
  regions: number;
  irqs: number;
}

/** One device a bus or slot reset of the device's bus also resets (struct vfio_pci_dependent_device). */
export interface HotResetDevice {
  groupId: string;
  /** DDDD:BB:DD.F */
  bdf: string;
}

/** VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: what VFIO_DEVICE_PCI_HOT_RESET would reset, each device with its group. */
export interface HotResetInfo {
  flags: number;
  devices: HotResetDevice[];
}

export interface VfioDeviceHandle {
  readonly bdf: string;
  readonly fd: number | null;
  /** VFIO_DEVICE_GET_INFO */
  info(): VfioDeviceInfo;
  /** VFIO_DEVICE_GET_PCI_HOT_RESET_INFO; null when neither a slot nor a bus reset is possible (ENODEV). */
  hotResetInfo(): HotResetInfo | null;
  close(): void;
}

export interface VfioGroupHandle {
  readonly groupId: string;
  readonly fd: number | null;
  /** VFIO_GROUP_GET_STATUS */
  status(): VfioGroupStatus;
  /** VFIO_GROUP_GET_DEVICE_FD (the group in a container with its IOMMU set; the device on vfio-pci). Opening resets the device. */
  openDevice(bdf: string): VfioDeviceHandle;
  /** VFIO_GROUP_SET_CONTAINER (EPERM when the group is not viable) */
  setContainer(container: VfioContainerHandle): void;
  /** VFIO_GROUP_UNSET_CONTAINER */
  unsetContainer(): void;
  close(): void;
}

export interface VfioBackend {
  readonly kind: 'kernel' | 'simulated';
  /** open /dev/vfio/vfio */
  openContainer(): VfioContainerHandle;
  /** open /dev/vfio/N (ENOENT before a vfio driver has registered a device of the group; EBUSY when open elsewhere) */
  openGroup(groupId: string): VfioGroupHandle;
}

export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_TYPE1v2_IOMMU = 3;
