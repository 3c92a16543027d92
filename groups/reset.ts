import { type Bdf, compareBdf, shortBdf } from '../model/bdf.js';
import { quirkPresent } from './quirks.js';
import {
  DEVICE_RESET_QUIRKS,
  type DeviceResetQuirk,
  FUNCTION_RESETS,
  NO_BUS_RESET_QUIRKS,
  NO_FLR_QUIRKS,
  NO_PM_RESET_QUIRKS,
  RESET_METHOD_ATTRIBUTE_SINCE,
  RESET_METHOD_SINCE,
  RESET_METHODS,
  type ResetFlagQuirk,
  type ResetMethod,
} from './reset-quirks.js';
import type { TopoDevice, Topology } from './topology.js';

// How the kernel can reset each device and what a reset drags along. Pure: a topology in, data out.
//
// The methods replay pci_init_reset_methods() (drivers/pci/pci.c): each method's probe, in the
// kernel's order, at the moment the device is enumerated. That moment matters for `bus`:
// pci_parent_bus_reset() refuses when another device is on the bus, and during enumeration only the
// devices added before this one are, so the kernel lists `bus` for the first device of a bus only.
// Whether a reset works later, when VFIO resets a function it hands out or takes back, is decided
// again at that time (`alone`); what a secondary bus reset reaches is what
// VFIO_DEVICE_GET_PCI_HOT_RESET_INFO reports (drivers/vfio/pci/vfio_pci_core.c: every device on the
// device's bus and below, when the bus has a bridge and no device under it forbids a bus reset).

export type { ResetMethod } from './reset-quirks.js';

/** How VFIO can reset a function alone (pci_try_reset_function when a user opens or releases it). */
export type ResetAlone =
  /** device_specific, acpi, flr or af_flr. */
  | 'function'
  /** Only the D3hot->D0 PM reset, which some devices ignore (QEMU tries a bus reset first). */
  | 'pm'
  /** A secondary bus reset that reaches this device only (it is alone on its bus). */
  | 'bus'
  | 'none';

export interface DeviceReset {
  bdf: Bdf;
  /** The methods the kernel tries, in its order: the kernel's own list when it gives one, else derived. */
  methods: string[];
  source: 'kernel' | 'derived';
  /** isogroup's derivation from config space, topology and the quirk tables; null when config space stops before the capabilities. */
  derived: ResetMethod[] | null;
  /** Why each derived method is there, and why the usual ones are not. */
  reasons: string[];
  /** Where the kernel's list and the derivation differ, one line each; empty when they agree or only one exists. */
  differences: string[];
  alone: ResetAlone;
  /** What a bus or slot reset of this device's bus resets (the device itself included); empty when neither is possible. */
  scope: Bdf[];
  /** Which bridge's reset that is, or why there is none. */
  scopeWhy: string;
}

export interface ResetReport {
  devices: Map<Bdf, DeviceReset>;
  /** What the kernel said: reset_method (5.15 and later), only the `reset` attribute (older), or nothing (an imported dump, a partial tree). */
  kernelSays: 'reset_method' | 'reset' | 'nothing';
  notes: string[];
}

export interface GroupReset {
  /** Every device a user gets can be reset without resetting a device of another group. */
  canResetAlone: boolean;
  /** Every device that a bus or slot reset of the group's devices also resets, sorted. */
  scope: Bdf[];
  /** The groups of those devices (this one included): what one user must own for VFIO to reset the bus (VFIO's device set). */
  groupsAffected: string[];
  /** Devices with no reset at all: their state carries over from one user to the next. */
  noReset: Bdf[];
  /** Devices that only a bus reset reaching other groups can reset. */
  sharedReset: Bdf[];
  /** Devices whose reset cannot be known from the input. */
  unknown: Bdf[];
  /** What a user will see, one line per device concerned; empty when nothing is wrong. */
  warnings: string[];
}

const s = shortBdf;
const classOf = (t: TopoDevice): number => (t.dev.class.startsWith('0x') ? parseInt(t.dev.class, 16) : -1);
const revisionOf = (t: TopoDevice): number => (t.dev.revision?.startsWith('0x') ? parseInt(t.dev.revision, 16) : -1);

const flagQuirk = (topo: Topology, t: TopoDevice, table: readonly ResetFlagQuirk[]): ResetFlagQuirk | null =>
  table.find(
    (q) =>
      quirkPresent(q.since, topo.kernel) &&
      q.vendor === t.vendorId &&
      (q.device === null || q.device === t.deviceId) &&
      (q.deviceMask === undefined || (t.deviceId & q.deviceMask.mask) === q.deviceMask.value) &&
      (q.revision === undefined || q.revision === revisionOf(t)) &&
      (q.classCode === undefined || classOf(t) >> 8 === q.classCode) &&
      !(q.offRootBusOnly && t.onRootBus),
  ) ?? null;

/** pci_dev_specific_reset(): the first table entry for the vendor and device answers. */
const deviceSpecific = (topo: Topology, t: TopoDevice): DeviceResetQuirk | null =>
  DEVICE_RESET_QUIRKS.find((q) => quirkPresent(q.since, topo.kernel) && q.vendor === t.vendorId && (q.device === null || q.device === t.deviceId)) ?? null;

const methodExists = (topo: Topology, m: ResetMethod): boolean => quirkPresent(RESET_METHOD_SINCE[m], topo.kernel);

/** pci_upstream_bridge(): the bridge above the device (above its PF for a VF); null on a root bus. */
const upstreamBridge = (topo: Topology, t: TopoDevice): TopoDevice | null => {
  const base = t.dev.isVirtfn && t.dev.physfn ? (topo.devices.get(t.dev.physfn) ?? t) : t;
  if (base.onRootBus) return null;
  const up = base.busSelf ?? base.dev.parent;
  return up ? (topo.devices.get(up) ?? null) : null;
};

/** The devices on a bus in the order the kernel added them: the bus scan (devfn order) first, VFs later. */
const enumerationOrder = (topo: Topology, busKey: string): TopoDevice[] =>
  [...(topo.byBus.get(busKey) ?? [])].sort((a, b) => Number(a.dev.isVirtfn) - Number(b.dev.isVirtfn) || a.devfn - b.devfn);

interface Derivation {
  methods: ResetMethod[];
  reasons: string[];
}

const derive = (topo: Topology, t: TopoDevice): Derivation | null => {
  const caps = t.dev.resetCaps;
  if (!caps) return null;
  const methods: ResetMethod[] = [];
  const reasons: string[] = [];
  const noFlr = flagQuirk(topo, t, NO_FLR_QUIRKS);
  const noBus = flagQuirk(topo, t, NO_BUS_RESET_QUIRKS);
  const noPm = flagQuirk(topo, t, NO_PM_RESET_QUIRKS);
  const flr = caps.flr && t.pcie === true && noFlr === null;

  const special = deviceSpecific(topo, t);
  if (special) {
    const ok =
      special.kind === 'always' ||
      (special.kind === 'chelsio-t4' && (t.deviceId & 0xf000) === 0x4000) ||
      (special.kind === 'flr-delay' && flr) ||
      (special.kind === 'nvme-flr' && flr && classOf(t) === 0x010802 && caps.bar0);
    if (ok) {
      methods.push('device_specific');
      reasons.push(`device_specific: quirk "${special.name}"`);
    } else reasons.push(`no device_specific: quirk "${special.name}" does not apply to this function`);
  }
  if (noFlr && (caps.flr || caps.afFlr)) reasons.push(`no flr: quirk "${noFlr.name}"`);
  if (flr) {
    methods.push('flr');
    reasons.push('flr: PCIe Device Capabilities has FLR');
  }
  if (caps.afFlr && noFlr === null) {
    methods.push('af_flr');
    reasons.push('af_flr: Advanced Features capability with TP and FLR');
  }
  if (caps.pm === 'soft-reset' && noPm === null) {
    methods.push('pm');
    reasons.push('pm: power management capability, No_Soft_Reset clear (D3hot->D0 resets it)');
  } else if (caps.pm === 'soft-reset') reasons.push(`no pm: quirk "${noPm!.name}"`);
  else if (caps.pm === 'no-soft-reset') reasons.push('no pm: No_Soft_Reset is set (D3hot->D0 keeps its state)');

  // pci_reset_bus_function() at enumeration.
  const up = upstreamBridge(topo, t);
  const cxlMasked = methodExists(topo, 'cxl_bus') && up?.dev.resetCaps?.cxlPort?.sbrUnmasked === false;
  if (cxlMasked) {
    methods.push('bus');
    reasons.push(`bus: below CXL port ${s(up!.bdf)}, whose masked Secondary Bus Reset the kernel still lists`);
  } else if (t.onRootBus) reasons.push('no bus: on a root bus, no bridge above it');
  else if (t.busSelf === null) reasons.push('no bus: on a virtual bus (an SR-IOV VF), no bridge above it');
  else if (noBus) reasons.push(`no bus: quirk "${noBus.name}"`);
  else {
    const first = enumerationOrder(topo, t.busKey)[0];
    if (first?.bdf === t.bdf) {
      methods.push('bus');
      reasons.push(`bus: the first device on bus ${t.busKey} when it was enumerated (bridge ${s(t.busSelf)})`);
    } else reasons.push(`no bus: ${s(first!.bdf)} was on bus ${t.busKey} before it when it was enumerated`);
  }
  if (methodExists(topo, 'cxl_bus') && up?.dev.resetCaps?.cxlPort) {
    methods.push('cxl_bus');
    reasons.push(`cxl_bus: below CXL port ${s(up.bdf)}`);
  }
  const order = (m: ResetMethod) => RESET_METHODS.indexOf(m);
  return { methods: methods.sort((a, b) => order(a) - order(b)), reasons };
};

/** Every device on a bus and below its bridges: what pci_walk_bus() visits. */
const busSubtree = (topo: Topology, busKey: string, out: Bdf[] = [], seen = new Set<string>()): Bdf[] => {
  if (seen.has(busKey)) return out;
  seen.add(busKey);
  for (const d of topo.byBus.get(busKey) ?? []) {
    out.push(d.bdf);
    if (d.secondaryBusKey !== null && d.dev.isBridge) busSubtree(topo, d.secondaryBusKey, out, seen);
  }
  return out;
};

/** What VFIO_DEVICE_GET_PCI_HOT_RESET_INFO lists for the device: pci_probe_reset_slot/bus, then the walk. */
const hotResetScope = (topo: Topology, t: TopoDevice): { scope: Bdf[]; why: string } => {
  if (t.onRootBus) return { scope: [], why: 'on a root bus: no bridge above it can reset its bus' };
  if (t.busSelf === null) return { scope: [], why: 'on a virtual bus (an SR-IOV VF): VFIO has neither a bus nor a slot reset for it' };
  const bridge = topo.devices.get(t.busSelf)!;
  if (flagQuirk(topo, bridge, NO_BUS_RESET_QUIRKS)) return { scope: [], why: `bridge ${s(bridge.bdf)} must not reset its bus (no-bus-reset quirk)` };
  const scope = busSubtree(topo, t.busKey).sort(compareBdf);
  const blocked = scope.map((b) => topo.devices.get(b)!).find((d) => flagQuirk(topo, d, NO_BUS_RESET_QUIRKS));
  if (blocked) return { scope: [], why: `${s(blocked.bdf)} below bridge ${s(bridge.bdf)} must not see a bus reset (no-bus-reset quirk)` };
  const slot = bridge.dev.resetCaps?.hotplugSlot ? ' (or its hot-plug slot)' : '';
  return { scope, why: `a secondary bus reset of bridge ${s(bridge.bdf)}${slot} resets bus ${t.busKey} and everything below it` };
};

/** pci_try_reset_function() when VFIO opens or releases the device: the first method that works. */
const aloneOf = (topo: Topology, t: TopoDevice, methods: readonly string[]): ResetAlone => {
  const up = upstreamBridge(topo, t);
  const onlyOnBus = (topo.byBus.get(t.busKey) ?? []).length === 1 && !t.onRootBus && t.busSelf !== null;
  const noSubordinate = !(t.dev.isBridge && t.secondaryBusKey !== null);
  for (const m of methods) {
    if (FUNCTION_RESETS.has(m)) return m === 'pm' ? 'pm' : 'function';
    // pci_parent_bus_reset(): now every device on the bus counts. A masked CXL port refuses `bus`; `cxl_bus` unmasks it.
    const masked = m === 'bus' && up?.dev.resetCaps?.cxlPort?.sbrUnmasked === false && methodExists(topo, 'cxl_bus');
    if ((m === 'bus' || m === 'cxl_bus') && !masked && onlyOnBus && noSubordinate) return 'bus';
  }
  return 'none';
};

const explainDifference = (topo: Topology, t: TopoDevice, m: string, inKernel: boolean): string => {
  if (inKernel) {
    if (m === 'acpi') return 'acpi: the kernel found an ACPI _RST method in the firmware, which config space does not show';
    if (m === 'device_specific') return "device_specific: the kernel has a device-specific reset for this device that isogroup's table lacks";
    if (m === 'bus')
      return `bus: the kernel lists it although another device was on bus ${t.busKey} first in isogroup's replay: this device was added first (hot-plug order), or reset_method was written`;
    return `${m}: the kernel lists it, isogroup does not derive it: reset_method was written, or the kernel's quirk tables differ from isogroup's`;
  }
  if (m === 'bus')
    return `bus: isogroup expects it (the first device on bus ${t.busKey}), the kernel does not list it: another device was there before it (hot-plug order), or reset_method was written`;
  const release = topo.kernel ? ` of ${topo.kernel.join('.')}` : '';
  return `${m}: isogroup derives it, the kernel does not list it: reset_method was written, or a quirk${release} that isogroup's table lacks`;
};

/** Reset methods, how each device can be reset alone, and what a bus reset of its bus reaches. */
export const deriveResets = (topo: Topology): ResetReport => {
  const all = [...topo.devices.values()];
  const hasMethodFile = all.some((t) => t.dev.resetMethods !== null);
  const attributeKnown = topo.kernel === null || quirkPresent(RESET_METHOD_ATTRIBUTE_SINCE, topo.kernel);
  const kernelSays: ResetReport['kernelSays'] = hasMethodFile ? 'reset_method' : all.some((t) => t.dev.resetFile) ? 'reset' : 'nothing';
  const notes: string[] = [];
  if (kernelSays === 'nothing')
    notes.push(
      'no reset or reset_method attribute in this input (an imported dump or a partial tree): every reset method is derived; an ACPI _RST method cannot be known',
    );
  else if (kernelSays === 'reset')
    notes.push(
      `the kernel${topo.kernel ? ` (${topo.kernel.join('.')})` : ''} has no reset_method (it came with ${RESET_METHOD_ATTRIBUTE_SINCE}): the methods are derived; the reset attribute says which devices it can reset at all`,
    );
  else if (!attributeKnown)
    notes.push(`reset_method is there although the kernel release says it predates ${RESET_METHOD_ATTRIBUTE_SINCE}: the files are trusted`);

  const devices = new Map<Bdf, DeviceReset>();
  const scopes = new Map<string, { scope: Bdf[]; why: string }>();
  for (const t of all) {
    const d = derive(topo, t);
    const unreadable = t.dev.problems.some((p) => p.file?.endsWith('/reset_method'));
    // A kernel with reset_method shows it for every device it can reset: no file means no method.
    const kernel = kernelSays === 'reset_method' && !unreadable ? (t.dev.resetMethods ?? []) : kernelSays === 'reset' && !t.dev.resetFile ? [] : null;
    const methods = kernel ?? d?.methods ?? [];
    const differences: string[] = [];
    if (kernel !== null && d !== null) {
      for (const m of kernel) if (!d.methods.includes(m as ResetMethod)) differences.push(explainDifference(topo, t, m, true));
      for (const m of d.methods) if (!kernel.includes(m)) differences.push(explainDifference(topo, t, m, false));
      const common = (list: readonly string[], other: readonly string[]) => list.filter((m) => other.includes(m)).join(' ');
      if (differences.length === 0 && common(kernel, d.methods) !== common(d.methods, kernel))
        differences.push(`order: the kernel tries ${kernel.join(' ')}, its default order is ${d.methods.join(' ')}: reset_method was written`);
    } else if (kernelSays === 'reset' && t.dev.resetFile && d !== null && d.methods.length === 0)
      differences.push('the kernel can reset it (it has the reset attribute) but isogroup derives no method: an ACPI _RST method, or a quirk isogroup lacks');
    // Every device of a bus has the same answer (the bus's): computed once per bus.
    const key = t.onRootBus || t.busSelf === null ? null : t.busKey;
    let hot = key === null ? undefined : scopes.get(key);
    if (!hot) {
      hot = hotResetScope(topo, t);
      if (key !== null) scopes.set(key, hot);
    }
    devices.set(t.bdf, {
      bdf: t.bdf,
      methods,
      source: kernel !== null ? 'kernel' : 'derived',
      derived: d?.methods ?? null,
      reasons: d?.reasons ?? ['config space stops before the capability list: FLR, PM and the other methods cannot be known'],
      differences,
      alone: aloneOf(topo, t, methods),
      scope: [...hot.scope],
      scopeWhy: hot.why,
    });
  }
  return { devices, kernelSays, notes };
};

const list = (bdfs: Bdf[]): string => bdfs.map(s).join(' ');
const byId = (a: string, b: string): number => Number(a) - Number(b) || a.localeCompare(b);
const ids = (first: string | null, rest: string[]): string => [...new Set([...(first === null ? [] : [first]), ...rest])].sort(byId).join(', ');

/**
 * A group's reset: the scope of a bus or slot reset of the devices a user gets (bridges stay with the
 * host), the groups that scope reaches, whether each device can be reset without resetting another
 * group's, and what a user will see when not.
 */
export const groupReset = (topo: Topology, report: ResetReport, members: readonly Bdf[], groupOf: (bdf: Bdf) => string | null): GroupReset => {
  const memberSet = new Set(members);
  const endpoints = members.filter((b) => topo.devices.get(b) && !topo.devices.get(b)!.dev.isBridge);
  const scope = [...new Set(endpoints.flatMap((b) => report.devices.get(b)?.scope ?? []))].sort(compareBdf);
  const groupsAffected = [...new Set(scope.map(groupOf).filter((g): g is string => g !== null))].sort(byId);
  const out: GroupReset = { canResetAlone: true, scope, groupsAffected, noReset: [], sharedReset: [], unknown: [], warnings: [] };
  for (const b of endpoints) {
    const r = report.devices.get(b)!;
    const ungrouped = r.scope.filter((x) => groupOf(x) === null);
    const others = r.scope.filter((x) => !memberSet.has(x));
    const otherGroups = [...new Set(others.map(groupOf).filter((g): g is string => g !== null))].sort(byId);
    const busResetUsable = r.scope.length > 0 && ungrouped.length === 0;
    if (r.source === 'derived' && r.derived === null) {
      out.unknown.push(b);
      out.warnings.push(`${s(b)}: its reset methods cannot be known (config space stops before the capabilities): read the host as root`);
      continue;
    }
    if (r.alone !== 'none' || (busResetUsable && others.length === 0)) {
      if (r.alone === 'pm' && busResetUsable && others.length > 0)
        out.warnings.push(
          `${s(b)} has only a PM reset (D3hot->D0, which some devices ignore); QEMU tries a bus reset first, which also resets ${list(others)} (group ${otherGroups.join(', ')}): one user must own group(s) ${ids(groupOf(b), otherGroups)} for it`,
        );
      continue;
    }
    const why = r.methods.length === 0 ? 'the kernel has no reset method for it' : `its ${r.methods.join(', ')} cannot reset it alone`;
    if (!busResetUsable) {
      out.noReset.push(b);
      const scopeWhy = ungrouped.length ? `${list(ungrouped)} under the same bridge is in no IOMMU group, so VFIO refuses a bus reset` : r.scopeWhy;
      out.warnings.push(
        `${s(b)} cannot be reset (${why}; ${scopeWhy}): its state carries over from one user to the next, and a guest that restarts finds it as it left it (the "works once, then hangs on restart" failure)`,
      );
    } else {
      out.sharedReset.push(b);
      out.warnings.push(
        `${s(b)} can be reset only by a bus reset that also resets ${list(others)} (group ${otherGroups.join(', ')}): VFIO does it only when one user owns group(s) ${ids(groupOf(b), otherGroups)}, otherwise QEMU reports the hot reset failed ("Cannot reset device ${b}, depends on group ${otherGroups[0]} which is not owned") and the device is not reset between users`,
      );
    }
  }
  out.canResetAlone = out.noReset.length === 0 && out.sharedReset.length === 0 && out.unknown.length === 0;
  return out;
};
