// isogroup's programmatic API: what a library user needs, and no more. Plain typed data in and out,
// typed errors (IsogroupError.code). Every function takes session options (root, simulate, stateDir,
// owner, ...) or a Session opened once with openSession.

// Handing groups out: one pipeline each, the same whether the CLI, the daemon or a library runs it
/** The same pipeline as assignGroup (an owner given as `owner`); kept for callers of the first API. */
export { type AssignOptions, type AssignResult, assignGroup, assignGroup as assignToOwner } from './api/assign.js';
// Captures
export { type ImportResult, importLspci, type SnapshotResult, snapshot } from './api/capture.js';
// Contexts
export { destroyOwnerContext, listContexts, mergeOwnerContexts, showContext } from './api/contexts.js';
export { type DeviceJson, type DevicesResult, listDevices, type ShowResult, showDevice } from './api/devices.js';
export { type CompareResult, compareGroups, type GroupJson, type GroupsResult, listGroups } from './api/groups.js';
// Kubernetes: the pool (groups assigned to the kubelet's owner) and its CDI spec
export { type CdiResult, generateCdi, type PoolRead, readPool } from './api/kubernetes.js';
// Reading a host (or a capture, or a fixture)
export { scan } from './api/read.js';
export { type ReleaseOptions, type ReleaseResult, recover, releaseGroup } from './api/release.js';
// Settings
export { openSession, Session, type SessionOptions } from './api/session.js';
export { type GroupStatus, type StatusResult, status } from './api/status.js';
export { decideGuard, type GuardAction } from './bind/guard.js';
export { DaemonClient } from './daemon/client.js';

// The daemon and its client
export { type DaemonStats, GuardDaemon, type GuardDaemonOptions } from './daemon/daemon.js';
// Errors
export { ERROR_CODES, type ErrorCode, exitCodeFor, IsogroupError, isIsogroupError } from './errors.js';
export type { ContextView } from './groups/context.js';
export { type DerivedGrouping, deriveGroups } from './groups/derive.js';
export { type IovaRange, usableIova } from './groups/iova.js';
export { evaluateGroup, type Policy, parsePolicy } from './groups/policy.js';
export { type DeviceReset, deriveResets, type GroupReset, groupReset, type ResetReport } from './groups/reset.js';
export { buildTopology } from './groups/topology.js';
export { checkViability, type Viability } from './groups/viability.js';
// The daemon's kubelet front end (device plugin API v1beta1)
export { KubeletPlugin, type KubeletPluginOptions } from './kubelet/plugin.js';
// The pure core, for callers that bring their own data
export { type Bdf, parseBdf } from './model/bdf.js';
export type { HostSnapshot, KernelGroup, PciDevice } from './model/device.js';
export type { Subject } from './model/owner.js';
export type { PoolDevice } from './pool/devices.js';
export { preferredAllocation } from './pool/preferred.js';
