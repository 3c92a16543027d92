import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { IsogroupError } from '../errors.js';
import { isBdf, splitBdf } from '../model/bdf.js';
import { parseReservedRegions } from '../model/build-device.js';
import { isDmaManagedDriver } from '../model/drivers.js';
import type {
  HotResetDevice,
  HotResetInfo,
  IovaRange,
  VfioBackend,
  VfioContainerHandle,
  VfioDeviceHandle,
  VfioDeviceInfo,
  VfioGroupHandle,
  VfioGroupStatus,
} from '../os/vfio.js';
import { iommuGroupFile, VFIO_CONTAINER, vfioGroup } from '../sysfs/paths.js';
import type { SimKernel } from './kernel.js';
import type { SimState } from './state.js';

// /dev/vfio as the fixture kernel simulates it, with the errnos recorded in oracle/NOTES.md:
// open(/dev/vfio/N) ENOENT until a vfio driver owns a device of N, EBUSY on a second open;
// GET_STATUS viable when a container is set or no device is on a DMA-API driver; SET_CONTAINER EPERM
// when not viable. A hold belongs to the process that opened it (a dead pid's holds vanish, as fds do).

const vfioError = (errno: string, message: string, details: Record<string, unknown> = {}): IsogroupError =>
  new IsogroupError(
    errno === 'EBUSY' ? 'E_GROUP_BUSY' : errno === 'EPERM' ? 'E_NOT_VIABLE' : errno === 'ENOENT' ? 'E_NOT_FOUND' : 'E_SYSFS_IO',
    `${message} (${errno})`,
    { errno, ...details },
  );

const ADDRESS_SPACE_END = (1n << 48n) - 1n;

export class SimulatedVfioBackend implements VfioBackend {
  readonly kind = 'simulated' as const;

  constructor(readonly kernel: SimKernel) {}

  openContainer(): VfioContainerHandle {
    if (!fs.existsSync(path.join(this.kernel.root, VFIO_CONTAINER))) throw vfioError('ENOENT', 'open /dev/vfio/vfio: the vfio module is not loaded');
    const id = crypto.randomUUID();
    this.kernel.withState((st) => {
      st.containers[id] = { pid: process.pid, groups: [], iommu: null };
    });
    return new SimContainer(this.kernel, id);
  }

  openGroup(groupId: string): VfioGroupHandle {
    if (!/^\d+$/.test(groupId)) throw vfioError('ENOENT', `open /dev/vfio/${groupId}: not a group number`);
    const token = crypto.randomUUID();
    this.kernel.withState((st) => {
      if (!fs.existsSync(path.join(this.kernel.root, vfioGroup(groupId))))
        throw vfioError('ENOENT', `open /dev/vfio/${groupId}: no vfio driver has a device of group ${groupId}`, { group: groupId });
      const h = st.holds[groupId];
      if (h) throw vfioError('EBUSY', `open /dev/vfio/${groupId}: already open (pid ${h.pid})`, { group: groupId, pid: h.pid });
      st.holds[groupId] = { pid: process.pid, token, container: null };
    });
    return new SimGroup(this.kernel, groupId, token);
  }
}

/** Viability as VFIO_GROUP_GET_STATUS computes it (owner_cnt == 0, or a container already set). */
export const simGroupViable = (kernel: SimKernel, groupId: string): boolean =>
  kernel.groupMembers(groupId).every((bdf) => {
    const d = kernel.driverOf(bdf);
    return d === null || isDmaManagedDriver(d);
  });

class SimGroup implements VfioGroupHandle {
  readonly fd = null;
  private closed = false;

  constructor(
    private readonly kernel: SimKernel,
    readonly groupId: string,
    private readonly token: string,
  ) {}

  private mine(st: SimState) {
    const h = st.holds[this.groupId];
    if (this.closed || !h || h.token !== this.token) throw vfioError('EBADF', `group ${this.groupId} handle is closed`);
    return h;
  }

  status(): VfioGroupStatus {
    return this.kernel.withState((st) => {
      const h = this.mine(st);
      const containerSet = h.container !== null;
      return { containerSet, viable: containerSet || simGroupViable(this.kernel, this.groupId) };
    });
  }

  setContainer(container: VfioContainerHandle): void {
    if (!(container instanceof SimContainer)) throw vfioError('EBADF', 'not a simulated container');
    this.kernel.withState((st) => {
      const h = this.mine(st);
      if (h.container !== null) throw vfioError('EBUSY', `group ${this.groupId} already has a container`);
      const c = st.containers[container.id];
      if (!c) throw vfioError('EBADF', 'container is closed');
      // iommu_group_claim_dma_owner(): EPERM while a DMA-API driver is bound in the group.
      if (!simGroupViable(this.kernel, this.groupId))
        throw vfioError('EPERM', `VFIO_GROUP_SET_CONTAINER on group ${this.groupId}: group is not viable`, { group: this.groupId });
      h.container = container.id;
      c.groups.push(this.groupId);
    });
  }

  openDevice(bdf: string): VfioDeviceHandle {
    this.kernel.withState((st) => {
      const h = this.mine(st);
      // vfio_group_get_device_fd(): a container with its IOMMU set, a device of the group on vfio-pci.
      if (h.container === null || st.containers[h.container]?.iommu == null)
        throw vfioError('EINVAL', `VFIO_GROUP_GET_DEVICE_FD on group ${this.groupId}: no container with an IOMMU set`, { group: this.groupId });
      if (this.kernel.groupOf(bdf) !== this.groupId || this.kernel.driverOf(bdf) !== 'vfio-pci')
        throw vfioError('ENODEV', `VFIO_GROUP_GET_DEVICE_FD: ${bdf} is not a vfio-pci device of group ${this.groupId}`, { group: this.groupId, bdf });
    });
    return new SimDevice(this.kernel, bdf);
  }

  unsetContainer(): void {
    this.kernel.withState((st) => {
      const h = this.mine(st);
      if (h.container === null) throw vfioError('EINVAL', `group ${this.groupId} has no container`);
      const c = st.containers[h.container];
      if (c) {
        c.groups = c.groups.filter((g) => g !== this.groupId);
        if (c.groups.length === 0) c.iommu = null;
      }
      h.container = null;
    });
  }

  close(): void {
    if (this.closed) return;
    this.kernel.withState((st) => {
      const h = st.holds[this.groupId];
      if (h && h.token === this.token) {
        if (h.container !== null) {
          const c = st.containers[h.container];
          if (c) {
            c.groups = c.groups.filter((g) => g !== this.groupId);
            if (c.groups.length === 0) c.iommu = null;
          }
        }
        delete st.holds[this.groupId];
      }
    });
    this.closed = true;
  }
}

// The fixture kernel's view of a device directory: its bus, whether it is a bridge and its secondary bus.
const configOf = (kernel: SimKernel, dir: string): Uint8Array => {
  try {
    return fs.readFileSync(path.join(kernel.root, dir, 'config'));
  } catch {
    return new Uint8Array(0);
  }
};
const secondaryOf = (kernel: SimKernel, dir: string): number | null => {
  const c = configOf(kernel, dir);
  return c.length > 0x19 && (c[0x0e]! & 0x7f) === 1 ? c[0x19]! : null;
};
/** Device directories on `bus` directly under `dir` (a VF on another, virtual bus is not on it). */
const onBus = (kernel: SimKernel, dir: string, bus: number): string[] =>
  fs
    .readdirSync(path.join(kernel.root, dir), { withFileTypes: true })
    .filter((e) => e.isDirectory() && isBdf(e.name) && splitBdf(e.name)?.bus === bus)
    .map((e) => `${dir}/${e.name}`)
    .sort();

class SimDevice implements VfioDeviceHandle {
  readonly fd = null;
  constructor(
    private readonly kernel: SimKernel,
    readonly bdf: string,
  ) {}

  private dir(): { dir: string; parent: string | null; bus: number } {
    const dir = this.kernel.devDir(this.bdf);
    if (!dir) throw vfioError('ENODEV', `${this.bdf} is gone`, { bdf: this.bdf });
    const parent = path.posix.dirname(dir);
    const bus = splitBdf(this.bdf)!.bus;
    // On a root bus, or a VF on a virtual bus: no bridge resets its bus.
    return { dir, parent: isBdf(path.posix.basename(parent)) && secondaryOf(this.kernel, parent) === bus ? parent : null, bus };
  }

  /** reset_works: the first method of reset_method that resets the function alone (pci_try_reset_function). */
  info(): VfioDeviceInfo {
    const { dir, parent, bus } = this.dir();
    let methods: string[] = [];
    try {
      methods = fs
        .readFileSync(path.join(this.kernel.root, dir, 'reset_method'), 'utf8')
        .trim()
        .split(/\s+/)
        .filter(Boolean);
    } catch {
      /* no method */
    }
    const alone = parent !== null && onBus(this.kernel, parent, bus).length === 1 && secondaryOf(this.kernel, dir) === null;
    const reset = methods.some((m) => ['device_specific', 'acpi', 'flr', 'af_flr', 'pm'].includes(m) || ((m === 'bus' || m === 'cxl_bus') && alone));
    return { flags: (reset ? 1 : 0) | 2, reset, pci: true, regions: 9, irqs: 5 };
  }

  /** The devices a secondary bus reset of the device's bus reaches, each with its group (EPERM for one in none). */
  hotResetInfo(): HotResetInfo | null {
    const { parent, bus } = this.dir();
    if (parent === null) return null;
    const devices: HotResetDevice[] = [];
    const walk = (dir: string, b: number): void => {
      for (const d of onBus(this.kernel, dir, b)) {
        const bdf = path.posix.basename(d);
        const groupId = this.kernel.groupOf(bdf);
        if (groupId === null) throw vfioError('EPERM', `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: ${bdf} is in no IOMMU group`, { bdf });
        devices.push({ groupId, bdf });
        const sec = secondaryOf(this.kernel, d);
        if (sec !== null) walk(d, sec);
      }
    };
    walk(parent, bus);
    return { flags: 0, devices };
  }

  close(): void {}
}

class SimContainer implements VfioContainerHandle {
  readonly fd = null;

  constructor(
    private readonly kernel: SimKernel,
    readonly id: string,
  ) {}

  private mine(st: SimState) {
    const c = st.containers[this.id];
    if (!c) throw vfioError('EBADF', 'container is closed');
    return c;
  }

  apiVersion(): number {
    return 0;
  }

  checkExtension(extension: number): boolean {
    return extension === 1 || extension === 3;
  }

  setIommu(type: 'type1v2' | 'type1'): void {
    this.kernel.withState((st) => {
      const c = this.mine(st);
      if (c.groups.length === 0) throw vfioError('EINVAL', 'VFIO_SET_IOMMU before any group is attached');
      if (c.iommu !== null) throw vfioError('EBUSY', 'VFIO_SET_IOMMU: already set');
      c.iommu = type;
    });
  }

  iovaRanges(): IovaRange[] {
    const groups = this.kernel.withState((st) => {
      const c = this.mine(st);
      if (c.iommu === null) throw vfioError('EINVAL', 'VFIO_IOMMU_GET_INFO before VFIO_SET_IOMMU');
      return [...c.groups];
    });
    const holes = groups.flatMap((g) => {
      try {
        const text = fs.readFileSync(path.join(this.kernel.root, iommuGroupFile(g, 'reserved_regions')), 'utf8');
        return parseReservedRegions(text, g, []).filter((r) => r.type !== 'direct-relaxable');
      } catch {
        return [];
      }
    });
    holes.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    const out: IovaRange[] = [];
    let cur = 0n;
    for (const h of holes) {
      if (h.start > cur) out.push({ start: cur, end: h.start - 1n });
      if (h.end + 1n > cur) cur = h.end + 1n;
    }
    if (cur <= ADDRESS_SPACE_END) out.push({ start: cur, end: ADDRESS_SPACE_END });
    return out;
  }

  close(): void {
    this.kernel.withState((st) => {
      const c = st.containers[this.id];
      if (!c) return;
      for (const g of c.groups) {
        const h = st.holds[g];
        if (h && h.container === this.id) h.container = null;
      }
      delete st.containers[this.id];
    });
  }
}
