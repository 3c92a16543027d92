// The daemon's holds: every assigned group open (/dev/vfio/N) and attached to its owner's container, one
// container per owner (the merged IOMMU context). While a group is held, the kernel refuses host drivers
// for devices inside it (DMA ownership: -EBUSY).

import { IsogroupError, isIsogroupError } from '../errors.js';
import { compareIovaRanges, rangeFromJson, rangesToJson } from '../groups/iova.js';
import type { VfioBackend, VfioContainerHandle, VfioGroupHandle } from '../os/vfio.js';
import type { JournalEntry } from '../state/journal.js';
import type { EventHub } from './events.js';
import type { Logger } from './log.js';

interface OwnerHold {
  container: VfioContainerHandle;
  groups: Map<string, VfioGroupHandle>;
  iommuSet: boolean;
}

export class Holds {
  private readonly byOwner = new Map<string, OwnerHold>();
  /** The last error per group that could not be held (reported once per distinct error). */
  readonly errors = new Map<string, string>();
  failures = 0;

  constructor(
    private readonly vfio: VfioBackend,
    private readonly hub: EventHub,
    private readonly logger: Logger,
  ) {}

  /** Group ids held now. */
  groups(): Set<string> {
    const out = new Set<string>();
    for (const h of this.byOwner.values()) for (const id of h.groups.keys()) out.add(id);
    return out;
  }

  ownerOf(groupId: string): string | null {
    for (const [owner, h] of this.byOwner) if (h.groups.has(groupId)) return owner;
    return null;
  }

  /** Open /dev/vfio/N and attach it to the owner's container (created on first use). */
  hold(entry: Pick<JournalEntry, 'groupId' | 'owner'>): boolean {
    if (this.ownerOf(entry.groupId) !== null) return true;
    let owner = this.byOwner.get(entry.owner);
    let created = false;
    let group: VfioGroupHandle | null = null;
    try {
      if (!owner) {
        owner = { container: this.vfio.openContainer(), groups: new Map(), iommuSet: false };
        created = true;
      }
      group = this.vfio.openGroup(entry.groupId);
      group.setContainer(owner.container);
      if (!owner.iommuSet) {
        owner.container.setIommu('type1v2');
        owner.iommuSet = true;
      }
      owner.groups.set(entry.groupId, group);
      if (created) this.byOwner.set(entry.owner, owner);
      this.errors.delete(entry.groupId);
      this.hub.publish('hold', { group: entry.groupId, owner: entry.owner, ok: true });
      this.logger.info('holding group', { group: entry.groupId, owner: entry.owner });
      return true;
    } catch (error) {
      group?.close();
      if (created) owner?.container.close();
      const message = isIsogroupError(error) ? `${error.code}: ${error.message}` : String(error);
      if (this.errors.get(entry.groupId) !== message) {
        this.failures++;
        this.hub.publish('hold', { group: entry.groupId, owner: entry.owner, ok: false, error: message });
        this.logger.warn('cannot hold group yet', { group: entry.groupId, owner: entry.owner, error: message });
      }
      this.errors.set(entry.groupId, message);
      return false;
    }
  }

  /** Close the group (and the owner's container when it was the last group). */
  unhold(groupId: string): void {
    const owner = this.ownerOf(groupId);
    if (owner === null) return;
    const h = this.byOwner.get(owner)!;
    h.groups.get(groupId)!.close();
    h.groups.delete(groupId);
    if (h.groups.size === 0) {
      h.container.close();
      this.byOwner.delete(owner);
    }
    this.hub.publish('unhold', { group: groupId, owner });
  }

  /** Move a held group into another owner's container (after a merge): unset, then set on the new one. */
  migrate(groupId: string, from: string, to: string): void {
    const src = this.byOwner.get(from)!;
    const handle = src.groups.get(groupId)!;
    let dst = this.byOwner.get(to);
    const created = !dst;
    try {
      if (!dst) dst = { container: this.vfio.openContainer(), groups: new Map(), iommuSet: false };
      handle.unsetContainer();
      handle.setContainer(dst.container);
      if (!dst.iommuSet) {
        dst.container.setIommu('type1v2');
        dst.iommuSet = true;
      }
      src.groups.delete(groupId);
      dst.groups.set(groupId, handle);
      if (created) this.byOwner.set(to, dst);
      if (src.groups.size === 0) {
        src.container.close();
        this.byOwner.delete(from);
      }
      this.hub.publish('hold', { group: groupId, owner: to, ok: true, movedFrom: from });
    } catch (error) {
      // Could not move it: close it, the next pass holds it again under the right owner.
      src.groups.delete(groupId);
      handle.close();
      if (created && dst) dst.container.close();
      this.logger.warn('cannot move group between containers', { group: groupId, from, to, error: (error as Error).message });
    }
  }

  /** The owner's container and groups, in order (the fds an owner receives; the daemon keeps its own). */
  handlesOf(owner: string): { container: VfioContainerHandle; groups: [string, VfioGroupHandle][] } {
    const h = this.byOwner.get(owner);
    if (!h) throw new IsogroupError('E_NOT_FOUND', `${owner} holds no groups through this daemon`, { owner });
    return { container: h.container, groups: [...h.groups] };
  }

  /** The kernel's own IOVA ranges for an owner's container (VFIO_IOMMU_GET_INFO), compared with the computed ones. */
  kernelIova(owner: string, computed: { start: string; end: string }[]): Record<string, unknown> | null {
    const h = this.byOwner.get(owner);
    if (!h?.iommuSet) return null;
    try {
      const kernel = h.container.iovaRanges();
      const diff = compareIovaRanges(
        computed.map((r) => rangeFromJson(r)),
        kernel,
      );
      if (!diff.equal) this.logger.error('kernel IOVA ranges differ from the computed ones', { owner, kernel: rangesToJson(kernel), computed });
      return {
        iovaRanges: rangesToJson(kernel),
        match: diff.equal,
        ...(diff.equal
          ? {}
          : {
              error: {
                code: 'E_IOVA_MISMATCH',
                message: `the kernel's usable IOVA ranges for ${owner}'s container differ from the computed ones`,
                onlyComputed: rangesToJson(diff.onlyComputed),
                onlyKernel: rangesToJson(diff.onlyKernel),
              },
            }),
      };
    } catch (error) {
      return { error: { code: isIsogroupError(error) ? error.code : 'E_INTERNAL', message: (error as Error).message } };
    }
  }

  /** Close everything (the daemon stops; the journal keeps the assignments). */
  closeAll(): void {
    for (const h of this.byOwner.values()) {
      for (const g of h.groups.values()) g.close();
      h.container.close();
    }
    this.byOwner.clear();
  }
}
