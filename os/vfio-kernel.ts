// The real-kernel VfioBackend: /dev/vfio/vfio (the container) and /dev/vfio/N (a group) through libc
// open + ioctl (sysfs/libc.ts, koffi). Every ioctl number and structure layout the project uses is
// written out here, derived from include/uapi/linux/vfio.h and include/uapi/asm-generic/ioctl.h:
//
//   #define VFIO_TYPE (';')            -> 0x3b
//   #define VFIO_BASE 100
//   #define VFIO_GET_API_VERSION        _IO(VFIO_TYPE, VFIO_BASE + 0)
//   #define VFIO_CHECK_EXTENSION        _IO(VFIO_TYPE, VFIO_BASE + 1)
//   #define VFIO_SET_IOMMU              _IO(VFIO_TYPE, VFIO_BASE + 2)
//   #define VFIO_GROUP_GET_STATUS       _IO(VFIO_TYPE, VFIO_BASE + 3)
//   #define VFIO_GROUP_SET_CONTAINER    _IO(VFIO_TYPE, VFIO_BASE + 4)
//   #define VFIO_GROUP_UNSET_CONTAINER  _IO(VFIO_TYPE, VFIO_BASE + 5)
//   #define VFIO_GROUP_GET_DEVICE_FD    _IO(VFIO_TYPE, VFIO_BASE + 6)
//   #define VFIO_DEVICE_GET_INFO        _IO(VFIO_TYPE, VFIO_BASE + 7)
//   #define VFIO_IOMMU_GET_INFO         _IO(VFIO_TYPE, VFIO_BASE + 12)   (on a container)
//   #define VFIO_DEVICE_GET_PCI_HOT_RESET_INFO _IO(VFIO_TYPE, VFIO_BASE + 12)   (on a device)
//
// VFIO uses plain _IO (direction none, size 0) for every request, even those that pass structures: the
// structures carry their own size in `argsz` (vfio.h explains why). asm-generic/ioctl.h:
//   _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr, _IOC_NONE = 0
// so _IO(0x3b, 100 + k) = 0x3b00 | (100 + k): VFIO_GET_API_VERSION = 0x3b64. (_IOC_NONE is 0 on x86
// and arm; powerpc/mips/sparc differ, and libc.ts refuses those architectures anyway.)
//
// Importing this module does nothing: libc is loaded on the first open.
import { type ErrorCode, IsogroupError } from '../errors.js';
import { C, ioctlBuffer, ioctlValue, sysClose, sysOpen } from './libc.js';
import {
  type HotResetDevice,
  type HotResetInfo,
  type IovaRange,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  type VfioBackend,
  type VfioContainerHandle,
  type VfioDeviceHandle,
  type VfioDeviceInfo,
  type VfioGroupHandle,
  type VfioGroupStatus,
} from './vfio.js';

// asm-generic/ioctl.h
export const IOC_NRSHIFT = 0;
export const IOC_TYPESHIFT = 8;
export const IOC_SIZESHIFT = 16;
export const IOC_DIRSHIFT = 30;
export const IOC_NONE = 0;
export const ioc = (dir: number, type: number, nr: number, size: number): number =>
  ((dir << IOC_DIRSHIFT) | (type << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT) | (size << IOC_SIZESHIFT)) >>> 0;
export const io = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);

// vfio.h
export const VFIO_TYPE = ';'.charCodeAt(0);
export const VFIO_BASE = 100;
export const VFIO_API_VERSION = 0;

export const VFIO_IOCTL = {
  GET_API_VERSION: io(VFIO_TYPE, VFIO_BASE + 0),
  CHECK_EXTENSION: io(VFIO_TYPE, VFIO_BASE + 1),
  SET_IOMMU: io(VFIO_TYPE, VFIO_BASE + 2),
  GROUP_GET_STATUS: io(VFIO_TYPE, VFIO_BASE + 3),
  GROUP_SET_CONTAINER: io(VFIO_TYPE, VFIO_BASE + 4),
  GROUP_UNSET_CONTAINER: io(VFIO_TYPE, VFIO_BASE + 5),
  GROUP_GET_DEVICE_FD: io(VFIO_TYPE, VFIO_BASE + 6),
  DEVICE_GET_INFO: io(VFIO_TYPE, VFIO_BASE + 7),
  IOMMU_GET_INFO: io(VFIO_TYPE, VFIO_BASE + 12),
  DEVICE_GET_PCI_HOT_RESET_INFO: io(VFIO_TYPE, VFIO_BASE + 12),
} as const;

/** struct vfio_group_status { __u32 argsz; __u32 flags; } */
export const GROUP_STATUS = { size: 8, argsz: 0, flags: 4 } as const;
export const VFIO_GROUP_FLAGS_VIABLE = 1 << 0;
export const VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1;

/** struct vfio_device_info { __u32 argsz; __u32 flags; __u32 num_regions; __u32 num_irqs; __u32 cap_offset; __u32 pad; } */
export const DEVICE_INFO = { size: 24, argsz: 0, flags: 4, numRegions: 8, numIrqs: 12 } as const;
export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;

/** struct vfio_pci_hot_reset_info { __u32 argsz; __u32 flags; __u32 count; struct vfio_pci_dependent_device devices[]; } */
export const HOT_RESET_INFO = { size: 12, argsz: 0, flags: 4, count: 8, devices: 12 } as const;
/** struct vfio_pci_dependent_device { union { __u32 group_id; __u32 devid; }; __u16 segment; __u8 bus; __u8 devfn; } */
export const DEPENDENT_DEVICE = { size: 8, groupId: 0, segment: 4, bus: 6, devfn: 7 } as const;
/** The entries hold iommufd device ids instead of group ids (a device opened through its cdev, 6.7 and later). */
export const VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1 << 0;

/** struct vfio_iommu_type1_info { __u32 argsz; __u32 flags; __u64 iova_pgsizes; __u32 cap_offset; } (+4 tail padding) */
export const TYPE1_INFO = { size: 24, argsz: 0, flags: 4, iovaPgsizes: 8, capOffset: 16 } as const;
export const VFIO_IOMMU_INFO_PGSIZES = 1 << 0;
export const VFIO_IOMMU_INFO_CAPS = 1 << 1;

/** struct vfio_info_cap_header { __u16 id; __u16 version; __u32 next; }; `next` is an offset from the start of the info buffer, 0 ends the chain. */
export const CAP_HEADER = { size: 8, id: 0, version: 2, next: 4 } as const;
export const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;
export const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;
export const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;
/** struct vfio_iommu_type1_info_cap_iova_range { header; __u32 nr_iovas; __u32 reserved; struct vfio_iova_range { __u64 start, end; } iova_ranges[]; } */
export const CAP_IOVA_RANGE = { nrIovas: 8, ranges: 16, rangeSize: 16 } as const;

export interface InfoCapability {
  id: number;
  version: number;
  /** Offset of the capability inside the info buffer. */
  offset: number;
}

export interface IommuInfo {
  flags: number;
  /** Bitmap of supported IOMMU page sizes (when VFIO_IOMMU_INFO_PGSIZES). */
  iovaPgsizes: bigint | null;
  capabilities: InfoCapability[];
  /** From VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE; null when the kernel did not report it. */
  iovaRanges: IovaRange[] | null;
}

const malformed = (reason: string, details: Record<string, unknown>): IsogroupError =>
  new IsogroupError('E_INVALID_INPUT', `VFIO_IOMMU_GET_INFO: malformed capability chain: ${reason}`, details);

/** Parse the iova-range capability at `offset` of an info buffer. */
export const parseIovaRangeCap = (buf: Buffer, offset: number): IovaRange[] => {
  if (offset + CAP_IOVA_RANGE.ranges > buf.length) throw malformed('IOVA range capability runs past the buffer', { offset, size: buf.length });
  const count = buf.readUInt32LE(offset + CAP_IOVA_RANGE.nrIovas);
  const end = offset + CAP_IOVA_RANGE.ranges + count * CAP_IOVA_RANGE.rangeSize;
  if (end > buf.length) throw malformed(`IOVA range capability claims ${count} ranges, more than the buffer holds`, { offset, count, size: buf.length });
  const ranges: IovaRange[] = [];
  for (let i = 0; i < count; i += 1) {
    const at = offset + CAP_IOVA_RANGE.ranges + i * CAP_IOVA_RANGE.rangeSize;
    const start = buf.readBigUInt64LE(at);
    const last = buf.readBigUInt64LE(at + 8);
    if (start > last) throw malformed(`IOVA range ${i} starts after it ends`, { offset: at, start: `0x${start.toString(16)}`, end: `0x${last.toString(16)}` });
    ranges.push({ start, end: last });
  }
  return ranges;
};

/**
 * Parse a struct vfio_iommu_type1_info buffer as VFIO_IOMMU_GET_INFO filled it: header fields, then
 * the capability chain (bounds-checked, loop-checked: the buffer is treated as untrusted input).
 */
export const parseIommuInfo = (buf: Buffer): IommuInfo => {
  if (buf.length < TYPE1_INFO.size)
    throw malformed(`info buffer of ${buf.length} bytes is shorter than the ${TYPE1_INFO.size}-byte header`, { size: buf.length });
  const flags = buf.readUInt32LE(TYPE1_INFO.flags);
  const iovaPgsizes = flags & VFIO_IOMMU_INFO_PGSIZES ? buf.readBigUInt64LE(TYPE1_INFO.iovaPgsizes) : null;
  const capabilities: InfoCapability[] = [];
  let iovaRanges: IovaRange[] | null = null;
  const seen = new Set<number>();
  let offset = flags & VFIO_IOMMU_INFO_CAPS ? buf.readUInt32LE(TYPE1_INFO.capOffset) : 0;
  while (offset !== 0) {
    if (seen.has(offset)) throw malformed(`capability at offset ${offset} loops back`, { offset });
    seen.add(offset);
    if (offset < TYPE1_INFO.size) throw malformed(`capability offset ${offset} points into the info header`, { offset });
    if (offset + CAP_HEADER.size > buf.length)
      throw malformed(`capability offset ${offset} runs past the ${buf.length}-byte buffer`, { offset, size: buf.length });
    const id = buf.readUInt16LE(offset + CAP_HEADER.id);
    const version = buf.readUInt16LE(offset + CAP_HEADER.version);
    capabilities.push({ id, version, offset });
    if (id === VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) iovaRanges = [...(iovaRanges ?? []), ...parseIovaRangeCap(buf, offset)];
    offset = buf.readUInt32LE(offset + CAP_HEADER.next);
  }
  return { flags, iovaPgsizes, capabilities, iovaRanges };
};

/** Parse a struct vfio_pci_hot_reset_info buffer as VFIO_DEVICE_GET_PCI_HOT_RESET_INFO filled it (bounds-checked). */
export const parseHotResetInfo = (buf: Buffer): HotResetInfo => {
  const bad = (reason: string, details: Record<string, unknown>) =>
    new IsogroupError('E_INVALID_INPUT', `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: ${reason}`, details);
  if (buf.length < HOT_RESET_INFO.size) throw bad(`buffer of ${buf.length} bytes is shorter than the ${HOT_RESET_INFO.size}-byte header`, { size: buf.length });
  const flags = buf.readUInt32LE(HOT_RESET_INFO.flags);
  const count = buf.readUInt32LE(HOT_RESET_INFO.count);
  if (HOT_RESET_INFO.devices + count * DEPENDENT_DEVICE.size > buf.length)
    throw bad(`${count} devices claimed, more than the ${buf.length}-byte buffer holds`, { count, size: buf.length });
  if (flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID)
    throw new IsogroupError('E_UNSUPPORTED', 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO answered with iommufd device ids, not groups', { flags });
  const devices: HotResetDevice[] = [];
  for (let i = 0; i < count; i += 1) {
    const at = HOT_RESET_INFO.devices + i * DEPENDENT_DEVICE.size;
    const devfn = buf.readUInt8(at + DEPENDENT_DEVICE.devfn);
    const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
    devices.push({
      groupId: String(buf.readUInt32LE(at + DEPENDENT_DEVICE.groupId)),
      bdf: `${hex(buf.readUInt16LE(at + DEPENDENT_DEVICE.segment), 4)}:${hex(buf.readUInt8(at + DEPENDENT_DEVICE.bus), 2)}:${hex(devfn >> 3, 2)}.${devfn & 7}`,
    });
  }
  return { flags, devices };
};

/** Parse a struct vfio_device_info buffer as VFIO_DEVICE_GET_INFO filled it. */
export const parseDeviceInfo = (buf: Buffer): VfioDeviceInfo => {
  if (buf.length < DEVICE_INFO.numIrqs + 4)
    throw new IsogroupError('E_INVALID_INPUT', `VFIO_DEVICE_GET_INFO: buffer of ${buf.length} bytes is too short`, { size: buf.length });
  const flags = buf.readUInt32LE(DEVICE_INFO.flags);
  return {
    flags,
    reset: (flags & VFIO_DEVICE_FLAGS_RESET) !== 0,
    pci: (flags & VFIO_DEVICE_FLAGS_PCI) !== 0,
    regions: buf.readUInt32LE(DEVICE_INFO.numRegions),
    irqs: buf.readUInt32LE(DEVICE_INFO.numIrqs),
  };
};

// errno -> code, as the simulated backend maps them (EPERM at SET_CONTAINER = not viable).
const codeFor = (errno: string, op: 'open' | 'ioctl' | 'set-container'): ErrorCode => {
  switch (errno) {
    case 'ENOENT':
    case 'ENODEV':
    case 'ENXIO':
      return 'E_NOT_FOUND';
    case 'EBUSY':
      return 'E_GROUP_BUSY';
    case 'EPERM':
      return op === 'set-container' ? 'E_NOT_VIABLE' : 'E_PERMISSION';
    case 'EACCES':
      return 'E_PERMISSION';
    default:
      return 'E_SYSFS_IO';
  }
};

// Re-label a libc error with the VFIO meaning of its errno, keeping errno in details.
const relabel = (error: unknown, op: 'open' | 'ioctl' | 'set-container', what: string, details: Record<string, unknown>): IsogroupError => {
  if (error instanceof IsogroupError && typeof error.details.errno === 'string') {
    const errno = error.details.errno;
    return new IsogroupError(codeFor(errno, op), `${what}: ${errno}`, { ...error.details, ...details }, { cause: error });
  }
  return error instanceof IsogroupError ? error : new IsogroupError('E_INTERNAL', `${what}: ${String(error)}`, details, { cause: error });
};

const withErrno = <T>(op: 'open' | 'ioctl' | 'set-container', what: string, details: Record<string, unknown>, fn: () => T): T => {
  try {
    return fn();
  } catch (error) {
    throw relabel(error, op, what, details);
  }
};

/** One VFIO_IOMMU_GET_INFO round trip: ask with the header size, grow to the argsz the kernel wants, ask again. */
export const readIommuInfo = (fd: number): IommuInfo => {
  let size: number = TYPE1_INFO.size;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const buf = Buffer.alloc(size);
    buf.writeUInt32LE(size, TYPE1_INFO.argsz);
    withErrno('ioctl', 'VFIO_IOMMU_GET_INFO', { fd }, () => ioctlBuffer(fd, VFIO_IOCTL.IOMMU_GET_INFO, buf));
    const wanted = buf.readUInt32LE(TYPE1_INFO.argsz);
    if (wanted <= size) return parseIommuInfo(buf);
    if (wanted > 1 << 20) throw malformed(`kernel asks for an argsz of ${wanted} bytes`, { argsz: wanted });
    size = wanted;
  }
  throw malformed('argsz kept growing between calls', { argsz: size });
};

class KernelContainer implements VfioContainerHandle {
  private open: boolean;
  constructor(readonly fd: number) {
    this.open = true;
  }

  private live(): number {
    if (!this.open) throw new IsogroupError('E_INTERNAL', 'VFIO container handle used after close', {});
    return this.fd;
  }

  apiVersion(): number {
    return withErrno('ioctl', 'VFIO_GET_API_VERSION', {}, () => ioctlValue(this.live(), VFIO_IOCTL.GET_API_VERSION, 0));
  }

  checkExtension(extension: number): boolean {
    return withErrno('ioctl', 'VFIO_CHECK_EXTENSION', { extension }, () => ioctlValue(this.live(), VFIO_IOCTL.CHECK_EXTENSION, extension)) > 0;
  }

  setIommu(type: 'type1v2' | 'type1'): void {
    const value = type === 'type1v2' ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU;
    withErrno('ioctl', `VFIO_SET_IOMMU(${type})`, { iommu: type }, () => ioctlValue(this.live(), VFIO_IOCTL.SET_IOMMU, value));
  }

  /** The full VFIO_IOMMU_GET_INFO answer (page sizes, capability list). */
  iommuInfo(): IommuInfo {
    return readIommuInfo(this.live());
  }

  iovaRanges(): IovaRange[] {
    const info = this.iommuInfo();
    if (info.iovaRanges === null) {
      throw new IsogroupError('E_UNSUPPORTED', 'VFIO_IOMMU_GET_INFO has no IOVA range capability (kernel older than 5.4?)', {
        capabilities: info.capabilities.map((c) => c.id),
      });
    }
    return info.iovaRanges;
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    sysClose(this.fd);
  }
}

class KernelGroup implements VfioGroupHandle {
  private open: boolean;
  constructor(
    readonly groupId: string,
    readonly fd: number,
  ) {
    this.open = true;
  }

  private live(): number {
    if (!this.open) throw new IsogroupError('E_INTERNAL', `VFIO group ${this.groupId} handle used after close`, { group: this.groupId });
    return this.fd;
  }

  status(): VfioGroupStatus {
    const buf = Buffer.alloc(GROUP_STATUS.size);
    buf.writeUInt32LE(GROUP_STATUS.size, GROUP_STATUS.argsz);
    withErrno('ioctl', `VFIO_GROUP_GET_STATUS on group ${this.groupId}`, { group: this.groupId }, () =>
      ioctlBuffer(this.live(), VFIO_IOCTL.GROUP_GET_STATUS, buf),
    );
    const flags = buf.readUInt32LE(GROUP_STATUS.flags);
    return { viable: (flags & VFIO_GROUP_FLAGS_VIABLE) !== 0, containerSet: (flags & VFIO_GROUP_FLAGS_CONTAINER_SET) !== 0 };
  }

  setContainer(container: VfioContainerHandle): void {
    if (typeof container.fd !== 'number') throw new IsogroupError('E_INTERNAL', 'VFIO_GROUP_SET_CONTAINER needs a kernel container (it has no fd)', {});
    // The argument is a pointer to an int holding the container fd.
    const arg = Buffer.alloc(4);
    arg.writeInt32LE(container.fd, 0);
    withErrno('set-container', `VFIO_GROUP_SET_CONTAINER on group ${this.groupId}`, { group: this.groupId }, () =>
      ioctlBuffer(this.live(), VFIO_IOCTL.GROUP_SET_CONTAINER, arg),
    );
  }

  openDevice(bdf: string): VfioDeviceHandle {
    // The name becomes a C string for the kernel: a PCI address only.
    if (!/^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/.test(bdf))
      throw new IsogroupError('E_INVALID_INPUT', `${JSON.stringify(bdf)} is not a PCI address`, { bdf });
    const fd = withErrno('ioctl', `VFIO_GROUP_GET_DEVICE_FD ${bdf} on group ${this.groupId}`, { group: this.groupId, bdf }, () =>
      ioctlBuffer(this.live(), VFIO_IOCTL.GROUP_GET_DEVICE_FD, Buffer.from(`${bdf}\0`)),
    );
    return new KernelDevice(bdf, fd);
  }

  unsetContainer(): void {
    withErrno('ioctl', `VFIO_GROUP_UNSET_CONTAINER on group ${this.groupId}`, { group: this.groupId }, () =>
      ioctlValue(this.live(), VFIO_IOCTL.GROUP_UNSET_CONTAINER, 0),
    );
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    sysClose(this.fd);
  }
}

class KernelDevice implements VfioDeviceHandle {
  private open = true;
  constructor(
    readonly bdf: string,
    readonly fd: number,
  ) {}

  private live(): number {
    if (!this.open) throw new IsogroupError('E_INTERNAL', `VFIO device ${this.bdf} handle used after close`, { bdf: this.bdf });
    return this.fd;
  }

  info(): VfioDeviceInfo {
    const buf = Buffer.alloc(DEVICE_INFO.size);
    buf.writeUInt32LE(DEVICE_INFO.size, DEVICE_INFO.argsz);
    withErrno('ioctl', `VFIO_DEVICE_GET_INFO on ${this.bdf}`, { bdf: this.bdf }, () => ioctlBuffer(this.live(), VFIO_IOCTL.DEVICE_GET_INFO, buf));
    return parseDeviceInfo(buf);
  }

  hotResetInfo(): HotResetInfo | null {
    // Asked with the bare header first: the kernel answers ENOSPC with the count it needs room for.
    let size: number = HOT_RESET_INFO.size;
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const buf = Buffer.alloc(size);
      buf.writeUInt32LE(size, HOT_RESET_INFO.argsz);
      try {
        ioctlBuffer(this.live(), VFIO_IOCTL.DEVICE_GET_PCI_HOT_RESET_INFO, buf);
        return parseHotResetInfo(buf);
      } catch (error) {
        const errno = error instanceof IsogroupError ? error.details.errno : undefined;
        if (errno === 'ENODEV') return null;
        if (errno !== 'ENOSPC') throw relabel(error, 'ioctl', `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO on ${this.bdf}`, { bdf: this.bdf });
        const count = buf.readUInt32LE(HOT_RESET_INFO.count);
        if (count > 4096) throw new IsogroupError('E_INVALID_INPUT', `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: kernel asks room for ${count} devices`, { count });
        size = HOT_RESET_INFO.devices + count * DEPENDENT_DEVICE.size;
      }
    }
    throw new IsogroupError('E_SYSFS_IO', `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO on ${this.bdf}: the device count kept changing`, { bdf: this.bdf });
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    sysClose(this.fd);
  }
}

export interface KernelVfioOptions {
  /** Where the vfio character devices live (default /dev/vfio). */
  devDir?: string;
}

export class KernelVfioBackend implements VfioBackend {
  readonly kind = 'kernel' as const;
  readonly devDir: string;

  constructor(options: KernelVfioOptions = {}) {
    this.devDir = options.devDir ?? '/dev/vfio';
  }

  openContainer(): VfioContainerHandle & { iommuInfo(): IommuInfo } {
    const path = `${this.devDir}/vfio`;
    const fd = withErrno('open', `open ${path}`, { path }, () => sysOpen(path, C.O_RDWR));
    const container = new KernelContainer(fd);
    try {
      const version = container.apiVersion();
      if (version !== VFIO_API_VERSION) {
        throw new IsogroupError('E_UNSUPPORTED', `VFIO API version ${version}, expected ${VFIO_API_VERSION}`, { version });
      }
    } catch (error) {
      container.close();
      throw error;
    }
    return container;
  }

  openGroup(groupId: string): VfioGroupHandle {
    // A group id becomes a path component: digits only.
    if (!/^\d{1,10}$/.test(groupId)) throw new IsogroupError('E_INVALID_INPUT', `${JSON.stringify(groupId)} is not an IOMMU group number`, { group: groupId });
    const path = `${this.devDir}/${groupId}`;
    const fd = withErrno('open', `open ${path}`, { path, group: groupId }, () => sysOpen(path, C.O_RDWR));
    return new KernelGroup(groupId, fd);
  }
}
