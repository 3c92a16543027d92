// isogroup's programmatic API: plain typed data in and out, typed errors (IsogroupError.code).
export { IsogroupError, isIsogroupError, ERROR_CODES, exitCodeFor, type ErrorCode } from './errors.js';
export { type Bdf, parseBdf, parseBdfLoose, isBdf, compareBdf, splitBdf, formatBdf } from './model/bdf.js';
export { parseConfigSpace, ACS_BITS, type ConfigSpace, type PortType, type AcsInfo } from './model/config-space.js';
export type { PciDevice, HostSnapshot, KernelGroup, IommuUnit, ReservedRegion, Problem } from './model/device.js';
export { NodeSysfsPort, type SysfsPort } from './sysfs/port.js';
export { scanHost, type ScanOptions } from './sysfs/scan.js';
export { loadPciIds, parsePciIds, type PciIds } from './model/pci-ids.js';
export { writeFixtureRoot, type FixtureSpec, type FixtureDeviceSpec } from './capture/fixture-writer.js';
export { resolveRoot, unpackCapture } from './capture/unpack.js';
export * from './api/devices.js';
export * from './api/import.js';
export * from './api/groups.js';
export * from './api/bind.js';
export * from './api/contexts.js';
export { GuardDaemon, type GuardDaemonOptions, type DaemonStats } from './daemon/guard-daemon.js';
export { DaemonClient } from './daemon/client.js';
export { decideGuard, decideDevice, type GuardAction, type GuardEvent, type GuardAssignment } from './bind/guard.js';
export {
  attachGroup,
  detachGroup,
  mergeContexts,
  destroyContext,
  contextView,
  checkCompatibility,
  groupFacts,
  type ContextTable,
  type IommuContext,
  type ContextView,
} from './groups/context.js';
export { usableIova, compareIovaRanges, type IovaRange } from './groups/iova.js';
export { parsePolicy, evaluateGroup, evaluateDevice, type Policy, type Subject } from './groups/policy.js';
