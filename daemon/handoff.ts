// Hand-off of a group's device node to its owner: the daemon drops its hold and gives /dev/vfio/N to the
// owner (chown, 0660); until the owner opens it nobody holds the group, so the guard keeps repairing it
// and notices the open. Release takes the node back. A hand-off to a container the kubelet starts is the
// same without the chown (the runtime makes the container's own node), and ends by itself: once the
// container has opened the group and closed it again (it exited), the daemon holds the group again.
// The kernel lets one file at a time open a group, so a container can only open it after our hold goes.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Session } from '../api/session.js';
import { IsogroupError, isIsogroupError } from '../errors.js';
import type { VfioBackend } from '../os/vfio.js';
import { type Handoff, loadHandoffs, saveHandoffs } from '../state/handoffs.js';
import type { JournalEntry } from '../state/journal.js';
import { vfioGroup } from '../sysfs/paths.js';
import type { EventHub } from './events.js';
import type { Holds } from './holds.js';
import type { Logger } from './log.js';

export class Handoffs {
  private readonly byGroup: Map<string, Handoff>;

  constructor(
    private readonly session: Session,
    private readonly stateDir: string,
    private readonly holds: Holds,
    private readonly vfio: VfioBackend,
    private readonly hub: EventHub,
    private readonly logger: Logger,
  ) {
    this.byGroup = loadHandoffs(stateDir);
  }

  has(groupId: string): boolean {
    return this.byGroup.has(groupId);
  }

  get(groupId: string): Handoff | undefined {
    return this.byGroup.get(groupId);
  }

  groups(): string[] {
    return [...this.byGroup.keys()];
  }

  private node(groupId: string): string {
    return path.join(this.session.root, vfioGroup(groupId));
  }

  /** Give the owner /dev/vfio/N itself: drop our hold, chown it to the owner, mode 0660. */
  give(entry: JournalEntry, owner: string): Handoff {
    const groupId = entry.groupId;
    if (entry.owner !== owner)
      throw new IsogroupError('E_CONTEXT', `group ${groupId} belongs to ${entry.owner}, not ${owner}`, { group: groupId, owner: entry.owner });
    const who = this.session.subjectForOwner(owner);
    if (who.uid < 0)
      throw new IsogroupError('E_INVALID_INPUT', `owner ${owner} is not a user of this host (no passwd entry): cannot give it /dev/vfio/${groupId}`, { owner });
    const node = this.node(groupId);
    const gid = who.gids[0] ?? who.uid;
    this.holds.unhold(groupId);
    try {
      fs.chownSync(node, who.uid, gid);
      fs.chmodSync(node, 0o660);
    } catch (error) {
      this.holds.hold(entry);
      throw new IsogroupError(
        'E_PERMISSION',
        `cannot give ${node} to ${owner}: ${(error as NodeJS.ErrnoException).code ?? error}`,
        { node, owner },
        { cause: error },
      );
    }
    const h: Handoff = { owner, uid: who.uid, gid, opened: false };
    this.byGroup.set(groupId, h);
    saveHandoffs(this.stateDir, this.byGroup);
    this.hub.publish('handoff', { group: groupId, owner, uid: who.uid, gid, node });
    return h;
  }

  /**
   * Let the container the kubelet is starting open /dev/vfio/N (PreStartContainer): drop our hold and
   * watch for its open. A container started again (a restart) gets the group the same way.
   */
  toContainer(entry: JournalEntry): Handoff {
    const groupId = entry.groupId;
    const existing = this.byGroup.get(groupId);
    if (existing && !existing.container)
      throw new IsogroupError('E_CONTEXT', `group ${groupId} was handed to ${existing.owner}'s process, not to a container`, { group: groupId });
    this.holds.unhold(groupId);
    const h: Handoff = { owner: entry.owner, uid: -1, gid: -1, opened: false, container: true };
    this.byGroup.set(groupId, h);
    saveHandoffs(this.stateDir, this.byGroup);
    this.hub.publish('handoff', { group: groupId, owner: entry.owner, container: true });
    return h;
  }

  /** Groups handed to containers. */
  containerGroups(): Set<string> {
    return new Set([...this.byGroup].filter(([, h]) => h.container).map(([id]) => id));
  }

  /**
   * Until the owner opens the group, nobody holds it: notice the open (our own open then fails EBUSY).
   * A container's group that opens again after that was closed by the container: hold it again.
   */
  watch(entry: JournalEntry): void {
    const groupId = entry.groupId;
    const h = this.byGroup.get(groupId);
    if (!h || (h.opened && !h.container)) return;
    try {
      this.vfio.openGroup(groupId).close();
    } catch (error) {
      if (!h.opened && isIsogroupError(error) && error.details.errno === 'EBUSY') {
        h.opened = true;
        saveHandoffs(this.stateDir, this.byGroup);
        this.hub.publish('handoff-opened', { group: groupId, owner: h.owner });
      }
      return;
    }
    if (!h.opened) return;
    this.byGroup.delete(groupId);
    saveHandoffs(this.stateDir, this.byGroup);
    this.hub.publish('handoff-returned', { group: groupId, owner: h.owner });
    this.holds.hold(entry);
  }

  /** Take the node back (root-owned, 0600) once the group is no longer assigned. */
  end(groupId: string): void {
    if (!this.byGroup.has(groupId)) return;
    const node = this.node(groupId);
    try {
      if (fs.existsSync(node)) {
        fs.chownSync(node, 0, 0);
        fs.chmodSync(node, 0o600);
      }
    } catch (error) {
      this.logger.warn('cannot revert /dev/vfio ownership', { node, error: (error as Error).message });
    }
    this.byGroup.delete(groupId);
    saveHandoffs(this.stateDir, this.byGroup);
    this.hub.publish('handoff-ended', { group: groupId });
  }
}
