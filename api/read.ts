// What every read shares: a scan of the session's root, the state it keeps (the contexts table in
// step with the journal), and an owner's view of both.

import { type ContextTable, contextOf, syncContextTable } from '../groups/context.js';
import type { IommuUnitCaps } from '../groups/iova.js';
import type { Bdf } from '../model/bdf.js';
import type { HostSnapshot } from '../model/device.js';
import { loadContexts } from '../state/contexts-store.js';
import { type Journal, readJournal } from '../state/journal.js';
import { scanHost } from '../sysfs/scan.js';
import { openSession, type Session, type SessionOptions } from './session.js';

/** Read a root (the live host by default) into a snapshot, with device names. */
export const scan = (options: SessionOptions | Session = {}): HostSnapshot => {
  const s = openSession(options);
  return scanHost(s.port(), { pciIds: s.pciIds() });
};

/** The journal's finished assignments, in the shape the contexts table is kept in step with. */
export const assignedGroupsOf = (journal: Journal) =>
  journal.entries.filter((e) => e.state === 'assigned').map((e) => ({ groupId: e.groupId, owner: e.owner, members: e.members.map((m) => m.bdf as Bdf) }));

/** The contexts table as stored, in step with the journal and the snapshot (nothing is written). */
export const contextTableOf = (
  stateDir: string,
  snap: HostSnapshot,
  caps: ReadonlyMap<string, IommuUnitCaps> | null = null,
  journal: Journal = readJournal(stateDir),
): ContextTable => syncContextTable(loadContexts(stateDir), assignedGroupsOf(journal), snap, caps ? { caps } : {});

export interface OwnerView {
  owner: string;
  groups: Set<string>;
  devices: Set<string>;
}

/** The groups and devices of one owner's context (vbus: each user sees only its own devices). */
export const ownerView = (s: Session, owner: string, snap: HostSnapshot): OwnerView => {
  const c = contextOf(contextTableOf(s.requireState(`the view of ${owner}`), snap), owner);
  return { owner, groups: new Set(c?.groups.map((g) => g.id) ?? []), devices: new Set(c?.devices.map((d) => d.bdf) ?? []) };
};

/** The session's view (--as OWNER, or a non-root socket peer), or null for the whole host. */
export const viewOf = (s: Session, snap: HostSnapshot): OwnerView | null => (s.as === null ? null : ownerView(s, s.as, snap));
