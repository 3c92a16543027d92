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

export interface VfioGroupHandle {
  readonly groupId: string;
  readonly fd: number | null;
  /** VFIO_GROUP_GET_STATUS */
  status(): VfioGroupStatus;
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
