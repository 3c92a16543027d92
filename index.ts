// biome-ignore-all assist/source/organizeImports: the public API reads by topic, not alphabetically.
// isogroup's programmatic API: what a library user needs, and no more. Plain typed data in and out,
// typed errors (IsogroupError.code). Every function takes session options (root, simulate, stateDir,
// owner, ...) or a Session opened once with openSession.

// Errors
export { IsogroupError, isIsogroupError, exitCodeFor, ERROR_CODES, type ErrorCode } from './errors.js';

// Settings
export { openSession, Session, type SessionOptions } from './api/session.js';

// Reading a host (or a capture, or a fixture)
export { scan } from './api/read.js';
export { listDevices, showDevice, type DeviceJson, type DevicesResult, type ShowResult } from './api/devices.js';
export { listGroups, compareGroups, type GroupsResult, type GroupJson, type CompareResult } from './api/groups.js';
export { status, type StatusResult, type GroupStatus } from './api/status.js';

// Handing groups out: one pipeline each, the same whether the CLI, the daemon or a library runs it
export { assignGroup, type AssignOptions, type AssignResult } from './api/assign.js';
export { releaseGroup, recover, type ReleaseOptions, type ReleaseResult } from './api/release.js';
/** The same pipeline as assignGroup (an owner given as `owner`); kept for callers of the first API. */
export { assignGroup as assignToOwner } from './api/assign.js';

// Contexts
export { listContexts, showContext, mergeOwnerContexts, destroyOwnerContext } from './api/contexts.js';
export type { ContextView } from './groups/context.js';

// Captures
export { importLspci, snapshot, type ImportResult, type SnapshotResult } from './api/capture.js';

// The daemon, its client, and its kubelet front end (device plugin API v1beta1, CDI)
export { GuardDaemon, type GuardDaemonOptions, type DaemonStats } from './daemon/daemon.js';
export { DaemonClient } from './daemon/client.js';
export { readPool, generateCdi, type PoolRead, type CdiResult } from './api/kubernetes.js';
export { KubeletPlugin, type KubeletPluginOptions } from './kubelet/plugin.js';

// The pure core, for callers that bring their own data
export { parseBdf, type Bdf } from './model/bdf.js';
export type { HostSnapshot, PciDevice, KernelGroup } from './model/device.js';
export type { Subject } from './model/owner.js';
export { deriveGroups, type DerivedGrouping } from './groups/derive.js';
export { checkViability, type Viability } from './groups/viability.js';
export type { GroupReset, DeviceReset } from './groups/reset.js';
export { decideGuard, type GuardAction } from './bind/guard.js';
export { usableIova, type IovaRange } from './groups/iova.js';
export { parsePolicy, evaluateGroup, type Policy } from './groups/policy.js';
