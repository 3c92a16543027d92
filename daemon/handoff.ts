// Hand-off of a group's device node to its owner: the daemon drops its hold and gives /dev/vfio/N to the
// owner (chown, 0660); until the owner opens it nobody holds the group, so the guard keeps repairing it
// and notices the open. Release takes the node back.

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

  /** Until the owner opens the group, nobody holds it: notice the open (our own open then fails EBUSY). */
  watch(groupId: string): void {
    const h = this.byGroup.get(groupId);
    if (!h || h.opened) return;
    try {
      this.vfio.openGroup(groupId).close();
    } catch (error) {
      if (isIsogroupError(error) && error.details.errno === 'EBUSY') {
        h.opened = true;
        saveHandoffs(this.stateDir, this.byGroup);
        this.hub.publish('handoff-opened', { group: groupId, owner: h.owner });
      }
    }
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
