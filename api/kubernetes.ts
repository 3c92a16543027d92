// The Kubernetes side of the API: the pool (the groups assigned to the kubelet's owner, `assign G --to
// kubernetes`) read as kubelet devices, the CDI spec for it, and the audit line of an allocation. The
// device plugin (kubelet/) and `isogroup cdi generate` both read the pool here.

import * as path from 'node:path';
import { stringify } from 'yaml';
import { errnoOf, IsogroupError } from '../errors.js';
import type { Bdf } from '../model/bdf.js';
import type { HostSnapshot } from '../model/device.js';
import type { NodeFacts } from '../pool/allocation.js';
import { CDI_SPEC_FILE, type CdiSpec, cdiSpec } from '../pool/cdi.js';
import { buildPool, type PoolDevice } from '../pool/devices.js';
import { AuditLog, auditResult } from '../state/audit.js';
import { replaceFileDurably } from '../state/durable-file.js';
import { readJournal } from '../state/journal.js';
import { IOMMUFD_DEV, pciDeviceVfioDev, vfioDeviceCdev } from '../sysfs/paths.js';
import { scanHost } from '../sysfs/scan.js';
import { openSession, type Session, type SessionOptions } from './session.js';

export interface PoolRead {
  owner: string;
  devices: PoolDevice[];
  facts: NodeFacts;
}

export interface PoolReadOptions {
  /** Groups protected now (the daemon's holds and hand-offs); null or absent: not known. */
  protectedGroups?: ReadonlySet<string> | null;
  /** The resource each group was offered under so far (it keeps it while in the pool). */
  previous?: ReadonlyMap<string, string | null>;
}

/** Where the root's device nodes are on this host, and whether it has iommufd. */
export const nodeFacts = (s: Session): NodeFacts => ({
  hostPath: (rel) => (s.live ? `/${rel}` : path.join(s.root, rel)),
  iommufd: s.port().exists(IOMMUFD_DEV),
});

// An endpoint on vfio-pci has vfio-dev/vfioX (6.1 on); the node /dev/vfio/devices/vfioX exists only
// where the kernel has device cdevs (CONFIG_VFIO_DEVICE_CDEV, 6.6 on).
const cdevsOf = (s: Session, snap: HostSnapshot, bdfs: Iterable<Bdf>): Map<Bdf, string> => {
  const port = s.port();
  const out = new Map<Bdf, string>();
  for (const bdf of bdfs) {
    if (!snap.devices.get(bdf)?.vfioDriver) continue;
    try {
      const name = port
        .list(pciDeviceVfioDev(bdf))
        .map((e) => e.name)
        .find((n) => /^vfio\d+$/.test(n) && port.exists(vfioDeviceCdev(n)));
      if (name) out.set(bdf, name);
    } catch {
      /* no vfio-dev/: no cdev */
    }
  }
  return out;
};

/** The pool now: every group assigned to the kubelet owner, as kubelet devices. */
export const readPool = (options: SessionOptions | Session = {}, read: PoolReadOptions = {}): PoolRead => {
  const s = openSession(options);
  const stateDir = s.requireState('the kubelet pool');
  const owner = s.kubeletOwner;
  const groups = readJournal(stateDir)
    .entries.filter((e) => e.state === 'assigned' && e.owner === owner)
    .map((e) => ({ groupId: e.groupId, members: e.members.map((m) => m.bdf as Bdf) }));
  const snap = scanHost(s.port(), { pciIds: null });
  const members = groups.flatMap((g) => [...g.members, ...(snap.kernelGroups.get(g.groupId)?.devices ?? [])]);
  const devices = buildPool({
    snap,
    groups,
    protectedGroups: read.protectedGroups ?? null,
    rules: s.kubeletResources(),
    ...(read.previous ? { previous: read.previous } : {}),
    cdevs: cdevsOf(s, snap, new Set(members)),
  });
  return { owner, devices, facts: nodeFacts(s) };
};

/** The CDI spec of a pool, as YAML (the header says who keeps it). */
export const cdiYaml = (spec: CdiSpec): string =>
  `# Container Device Interface spec for isogroup's pool: one device per IOMMU group assigned to the\n# kubelet's owner. Written by isogroup; do not edit (it is rewritten on every pool change).\n${stringify(spec)}`;

export interface CdiResult {
  spec: CdiSpec;
  yaml: string;
  /** The file written, or null (printed). */
  file: string | null;
  owner: string;
}

/** Write a file whole (temporary sibling, fsync, rename): a runtime reading it sees the old spec or the new one. */
export const writeCdiFile = (file: string, text: string): void => {
  try {
    replaceFileDurably(file, text, 0o644);
  } catch (error) {
    throw new IsogroupError('E_INVALID_INPUT', `cannot write ${file}: ${errnoOf(error) ?? String(error)}`, { file }, { cause: error });
  }
};

/** `isogroup cdi generate`: the pool's CDI spec, written to `out` when given. */
export const generateCdi = (options: SessionOptions | Session = {}, out?: string): CdiResult => {
  const pool = readPool(options);
  const spec = cdiSpec(pool.devices, pool.facts);
  const yaml = cdiYaml(spec);
  const file = out === undefined ? null : path.resolve(out);
  if (file !== null) writeCdiFile(file, yaml);
  return { spec, yaml, file, owner: pool.owner };
};

/** Where the daemon keeps the spec. */
export const cdiSpecPath = (s: Session): string => path.join(s.requireKubeletPlace('cdiDir', 'the CDI spec'), CDI_SPEC_FILE);

/** The audit lines of what the kubelet asked (Allocate, PreStartContainer): one per group, or one for a refusal. */
export const auditKubelet = (
  s: Session,
  request: { call: 'allocate' | 'prestart'; resource: string; groups: readonly { id: string; members: readonly string[] }[]; ids: readonly string[] },
  result: { ok: true } | { ok: false; error: IsogroupError },
): void => {
  const log = new AuditLog(s.requireState('a kubelet request'));
  const base = { action: `kubelet-${request.call}`, subject: null, owner: s.kubeletOwner };
  if (!result.ok) {
    auditResult(log, { ...base, reason: `kubelet asked ${request.resource} for ${request.ids.join(', ')}` }, result);
    return;
  }
  const done = request.call === 'allocate' ? 'allocated to a container' : 'handed to the container being started';
  for (const g of request.groups)
    auditResult(log, { ...base, group: g.id, devices: [...g.members], reason: `group ${g.id} (${request.resource}) ${done}` }, result);
};
