import { type Bdf, shortBdf } from '../model/bdf.js';
import type { HostSnapshot } from '../model/device.js';
import { ACS_DSP_MT_RR, ACS_USP_MT_RR, type AcsOptions, type AcsPathVerdict, type AcsVerdict, acsEnabled, acsPathEnabled, REQ_ACS_FLAGS } from './acs.js';
import { type AliasInfo, type AliasStep, aliasInfo, devsAreDmaAliases, dmaAliasWalk, realDmaDev } from './aliases.js';
import { QUIRK_TABLE_SOURCE } from './quirks.js';
import { buildTopology, type TopoDevice, type Topology } from './topology.js';

// IOMMU groups as the kernel forms them: drivers/iommu/iommu.c pci_device_group() and helpers
// (mainline), or the 2025 "Fix incorrect iommu_groups with PCIe ACS" series (acs-rework).
// The kernel never merges groups: each device, in probe order, joins the first existing group
// its rules lead to, or gets a new one. We replay exactly that and record which rule decided.

export type RuleSet = 'mainline' | 'acs-rework';

export interface DeriveOptions {
  rules?: RuleSet;
  assumeAcs?: Bdf[];
  /** `uname -r` of the kernel whose quirk tables apply (default: the newest table). */
  kernelRelease?: string | null;
  /** Devices the IOMMU translates (default: all). Others get no group, as the kernel leaves them. */
  translated?: Bdf[];
  /** Whether the Intel PCH ACS enable quirk succeeded (default true; the kernel logs "Intel PCH root port ACS workaround enabled"). */
  intelPchEnableOk?: boolean;
}

export interface GroupReason {
  device: Bdf;
  /** The device whose group it joined; null when it started a new group. */
  joined: Bdf | null;
  rule: string;
  message: string;
}

export interface DerivedGroup {
  id: string;
  devices: Bdf[];
  reasons: GroupReason[];
}

export interface DerivedGrouping {
  rules: RuleSet;
  groups: DerivedGroup[];
  groupOf: Map<Bdf, string>;
  notes: string[];
  /** Why (some of) these groups cannot be derived from the input; empty when they can. */
  underivable: string[];
}

/** Rule names used in reasons (stable: tests and the compare report use them). */
export const RULES = {
  isolated: 'isolated',
  aliasBridge: 'dma-alias-bridge',
  realDmaDev: 'real-dma-dev',
  acsPath: 'acs-path',
  aliasQuirk: 'dma-alias-quirk',
  multifunction: 'multifunction',
  reworkUpstream: 'rework-non-isolated-upstream',
  reworkBus: 'rework-bus-not-isolated',
  reworkSharedBus: 'rework-shared-bus',
  reworkFunction: 'rework-function-group',
  reworkXlate: 'rework-xlate-root',
} as const;

const s = shortBdf;

interface State {
  topo: Topology;
  aliases: Map<Bdf, AliasInfo>;
  acs: AcsOptions;
  groupOf: Map<Bdf, string>;
  groups: Map<string, DerivedGroup & { nonIsolated: boolean }>;
  next: number;
  unknown: Map<Bdf, string>;
  acsCache: Map<string, AcsVerdict>;
  slotCache: Map<string, TopoDevice[]>;
  pathCache: Map<Bdf, AcsPathVerdict>;
}

const noteVerdict = (st: State, bdf: Bdf, v: AcsVerdict): void => {
  if (v.source === 'unknown' && !st.unknown.has(bdf)) st.unknown.set(bdf, v.why);
};

// pci_acs_enabled() answers do not change during a derivation: memoize per device and flags.
const acsOf = (st: State, t: TopoDevice, flags = REQ_ACS_FLAGS): AcsVerdict => {
  const key = `${t.bdf}/${flags}`;
  let v = st.acsCache.get(key);
  if (!v) {
    v = acsEnabled(st.topo, t, flags, st.acs);
    st.acsCache.set(key, v);
  }
  noteVerdict(st, t.bdf, v);
  return v;
};

const pathOf = (st: State, b: Bdf): AcsPathVerdict => {
  let v = st.pathCache.get(b);
  if (!v) {
    v = acsPathEnabled(st.topo, b, REQ_ACS_FLAGS, st.acs);
    st.pathCache.set(b, v);
  }
  return v;
};

const join = (st: State, device: Bdf, group: string, reason: Omit<GroupReason, 'device'>): void => {
  st.groupOf.set(device, group);
  const g = st.groups.get(group)!;
  g.devices.push(device);
  g.reasons.push({ device, ...reason });
};

const alloc = (st: State, device: Bdf, rule: string, message: string, nonIsolated = false): string => {
  const id = String(st.next++);
  st.groups.set(id, { id, devices: [], reasons: [], nonIsolated });
  join(st, device, id, { joined: null, rule, message });
  return id;
};

const describe = (t: TopoDevice): string => {
  const kind: Record<string, string> = {
    'root-port': 'root port',
    'downstream-port': 'switch downstream port',
    'upstream-port': 'switch upstream port',
    'pcie-to-pci-bridge': 'PCIe-to-PCI bridge',
    'pci-to-pcie-bridge': 'PCI-to-PCIe bridge',
    rciep: 'integrated endpoint (RCiEP)',
    endpoint: 'endpoint',
    'legacy-endpoint': 'legacy endpoint',
    conventional: t.dev.isBridge ? 'conventional PCI bridge' : 'conventional PCI device',
    unknown: `${t.dev.isBridge ? 'bridge' : 'device'} of unknown type (config space ${t.dev.configSize} bytes)`,
  };
  return `${kind[t.type] ?? t.type} ${s(t.bdf)}`;
};

const aliasStepMessage = (d: Bdf, step: AliasStep, topo: Topology): string => {
  const t = topo.devices.get(step.device)!;
  switch (step.kind) {
    case 'pcie-to-pci-bridge':
      return `${d} aliases to PCIe-to-PCI bridge ${step.device} (requester ID ${step.requesterId}: the bridge takes over the IDs of everything behind it)`;
    case 'pci-to-pcie-bridge':
      return `${d} sits behind PCI-to-PCIe bridge ${step.device}, whose requester ID it carries`;
    case 'conventional-bridge':
      return t.pcie === null
        ? `${d} sits behind ${describe(t)}, assumed conventional PCI, which would take over its requester ID (${step.requesterId})`
        : `${d} sits behind ${describe(t)}, which takes over its requester ID (${step.requesterId}); conventional PCI has no isolation`;
    case 'real-dma-dev':
      return `${d} is behind VMD ${step.device}: its DMA carries the VMD endpoint's requester ID`;
    default:
      return `${d} also DMAs as ${step.requesterId} (quirk)`;
  }
};

// Same-bus devices that can be DMA aliases of p: only quirked alias masks make such pairs (a VMD's
// devices sit on another domain's bus), so look at devices with a mask and at the devfns in p's mask.
const aliasCandidates = (st: State, p: TopoDevice): TopoDevice[] => {
  const mates = st.topo.byBus.get(p.busKey) ?? [];
  const mask = st.aliases.get(p.bdf)?.mask;
  return mates.filter((o) => o !== p && ((st.aliases.get(o.bdf)?.mask.size ?? 0) > 0 || mask?.has(o.devfn)));
};

const slotMatesOf = (st: State, p: TopoDevice): TopoDevice[] => {
  const key = `${p.busKey}/${p.dev.slot}`;
  let list = st.slotCache.get(key);
  if (!list) {
    list = (st.topo.byBus.get(p.busKey) ?? []).filter((x) => x.dev.slot === p.dev.slot);
    st.slotCache.set(key, list);
  }
  return list;
};

// get_pci_alias_group(): same-bus devices that alias each other (quirked dma_alias_mask, VMD).
const aliasGroup = (st: State, p: TopoDevice, seen: Set<number>): { group: string; via: Bdf; rule: string; why: string } | null => {
  if (seen.has(p.devfn)) return null;
  seen.add(p.devfn);
  const g = st.groupOf.get(p.bdf);
  if (g !== undefined) return { group: g, via: p.bdf, rule: RULES.aliasQuirk, why: '' };
  for (const tmp of aliasCandidates(st, p)) {
    if (!devsAreDmaAliases(st.topo, p, tmp, st.aliases)) continue;
    const q = [...(st.aliases.get(p.bdf)?.quirks ?? []), ...(st.aliases.get(tmp.bdf)?.quirks ?? [])].map((x) => x.name);
    const why = `${s(p.bdf)} and ${s(tmp.bdf)} are DMA aliases of each other${q.length ? ` (quirk: ${[...new Set(q)].join('; ')})` : ''}`;
    const r = aliasGroup(st, tmp, seen) ?? functionGroup(st, tmp, seen);
    if (r) return { ...r, rule: RULES.aliasQuirk, why };
  }
  return null;
};

// get_pci_function_alias_group(): other functions of a multifunction slot, when neither has ACS.
const functionGroup = (st: State, p: TopoDevice, seen: Set<number>): { group: string; via: Bdf; rule: string; why: string } | null => {
  if (!p.multifunction) return null;
  const own = acsOf(st, p);
  if (own.enabled) return null;
  const slotMates = slotMatesOf(st, p);
  const open = slotMates.filter((x) => x === p || !acsOf(st, x).enabled);
  for (const tmp of slotMates) {
    if (tmp === p || acsOf(st, tmp).enabled) continue;
    const r = aliasGroup(st, tmp, seen);
    if (r) {
      const fns = open.map((x) => `.${x.dev.function}`).join('/');
      return {
        group: r.group,
        via: r.via,
        rule: RULES.multifunction,
        why: `functions ${s(p.bdf).slice(0, -2)}${fns} share a multifunction slot without ACS (${s(p.bdf)}: ${own.why}; ${s(tmp.bdf)}: ${acsOf(st, tmp).why})`,
      };
    }
  }
  return null;
};

const isolatedMessage = (st: State, d: TopoDevice): string => {
  const parts: string[] = [];
  if (d.onRootBus || d.chain.length === 0) parts.push('on the root bus');
  else {
    const top = d.chain[0]!;
    const path = pathOf(st, top);
    parts.push(`path to the root through ${describe(st.topo.devices.get(top)!)} is ACS-isolated (${path.verdict.why})`);
  }
  // Explanation only: not recorded as an ACS evaluation the grouping depended on.
  const v = acsEnabled(st.topo, d, REQ_ACS_FLAGS, st.acs);
  if (d.multifunction) {
    parts.push(
      v.enabled ? `multifunction but isolated: ${v.why}` : `first function probed in its multifunction slot (${v.why}); functions without ACS join it`,
    );
  } else if (v.source === 'quirk' || v.source === 'assumed') parts.push(v.why);
  return `${d.bdf} has a group of its own: ${parts.join('; ')}`;
};

const deriveMainline = (st: State, d: TopoDevice): void => {
  const steps = dmaAliasWalk(st.topo, d, st.aliases);
  let r = d;
  for (const step of steps) {
    r = st.topo.devices.get(step.device)!;
    const g = st.groupOf.get(step.device);
    if (g !== undefined && step.device !== d.bdf) {
      const rule = step.kind === 'real-dma-dev' ? RULES.realDmaDev : step.kind === 'quirk-alias' ? RULES.aliasQuirk : RULES.aliasBridge;
      join(st, d.bdf, g, { joined: step.device, rule, message: aliasStepMessage(d.bdf, step, st.topo) });
      return;
    }
  }
  // ACS walk: up from the alias root, to the first bridge whose own path to the root is isolated.
  for (const b of r.chain) {
    const path = pathOf(st, b);
    noteVerdict(st, path.failing ?? b, path.verdict);
    if (path.enabled) break;
    const bridge = st.topo.devices.get(b)!;
    const g = st.groupOf.get(b);
    if (g !== undefined) {
      const failing = st.topo.devices.get(path.failing!)!;
      const why = path.failing === b ? `${describe(bridge)}: ${path.verdict.why}` : `${describe(bridge)} sits below ${describe(failing)}: ${path.verdict.why}`;
      const via = r === d ? '' : ` (through its alias ${s(r.bdf)})`;
      join(st, d.bdf, g, { joined: b, rule: RULES.acsPath, message: `${d.bdf} joined ${b}${via}: ${why}` });
      return;
    }
    r = bridge;
  }
  const seen = new Set<number>();
  const found = aliasGroup(st, r, seen) ?? functionGroup(st, r, seen);
  if (found) {
    join(st, d.bdf, found.group, { joined: found.via, rule: found.rule, message: `${d.bdf} joined ${found.via}: ${found.why}` });
    return;
  }
  alloc(st, d.bdf, RULES.isolated, isolatedMessage(st, d));
};

// ---- the 2025 series (jgunthorpe/linux pcie_switch_groups), for --rules acs-rework ----

type BusIsolation = 'isolated' | 'bridge-non-isolated' | 'pcie-non-isolated' | 'bus-non-isolated' | 'switch-dsp-non-isolated';
const ISOLATED = REQ_ACS_FLAGS;

const busIsolated = (st: State, t: TopoDevice): { state: BusIsolation; why: string } => {
  if (t.onRootBus || t.busSelf === null) return { state: 'isolated', why: 'the root bus is treated as isolated' };
  const bridge = st.topo.devices.get(t.busSelf)!;
  const info = st.aliases.get(bridge.bdf);
  let type = bridge.type;
  if (bridge.pcie !== true) {
    if (info?.pcieBridgeAlias) type = 'pcie-to-pci-bridge';
    else return { state: 'bridge-non-isolated', why: `${describe(bridge)}: a PCI bus has no isolation` };
  }
  switch (type) {
    case 'root-port': {
      if (bridge.acs === null) return { state: 'isolated', why: `${describe(bridge)} has no ACS capability, so no loopback is assumed` };
      const v = acsOf(st, bridge, ISOLATED | ACS_DSP_MT_RR);
      return v.enabled ? { state: 'isolated', why: `${describe(bridge)}: ${v.why}` } : { state: 'pcie-non-isolated', why: `${describe(bridge)}: ${v.why}` };
    }
    case 'downstream-port':
      return { state: 'isolated', why: `${describe(bridge)}: a point-to-point link` };
    case 'upstream-port': {
      for (const dsp of st.topo.byBus.get(t.busKey) ?? []) {
        if (dsp.pcie !== true || dsp.type !== 'downstream-port' || (st.aliases.get(dsp.bdf)?.mask.size ?? 0) > 0) {
          return { state: 'pcie-non-isolated', why: `${describe(dsp)} on the switch's internal bus is not a plain downstream port` };
        }
        const v = acsOf(st, dsp, ISOLATED | ACS_DSP_MT_RR | ACS_USP_MT_RR);
        if (!v.enabled) {
          const usp = acsOf(st, dsp, ACS_USP_MT_RR);
          return usp.enabled
            ? { state: 'switch-dsp-non-isolated', why: `${describe(dsp)} lets traffic loop back to its sibling ports (${v.why})` }
            : { state: 'pcie-non-isolated', why: `${describe(dsp)} spoils the whole switch (${v.why})` };
        }
      }
      return { state: 'isolated', why: `every downstream port of switch ${s(bridge.bdf)} isolates` };
    }
    case 'pcie-to-pci-bridge':
      return bridge.hasMmioBar
        ? { state: 'bridge-non-isolated', why: `${describe(bridge)} has MMIO and no ACS` }
        : { state: 'bus-non-isolated', why: `${describe(bridge)}: everything on its PCI bus aliases (secondary bus, 00.0)` };
    default:
      return { state: 'bridge-non-isolated', why: `${describe(bridge)}: not an isolating bus` };
  }
};

// pci_mfds_are_same_group() of the series: functions without an ACS capability are assumed to have no loopback.
const mfdsSameGroup = (st: State, a: TopoDevice, b: TopoDevice): boolean => {
  if (a.dev.isVirtfn || b.dev.isVirtfn) return false;
  if (a.dev.slot !== b.dev.slot) return false;
  if (a.multifunction !== b.multifunction) return true;
  if (!a.multifunction) return false;
  if (a.acs !== null && !acsOf(st, a, ISOLATED).enabled) return true;
  if (b.acs !== null && !acsOf(st, b, ISOLATED).enabled) return true;
  return false;
};

const deriveRework = (st: State, d: TopoDevice): void => {
  const real = realDmaDev(st.topo, d);
  if (real !== d) {
    const g = st.groupOf.get(real.bdf);
    if (g !== undefined) {
      join(st, d.bdf, g, {
        joined: real.bdf,
        rule: RULES.realDmaDev,
        message: `${d.bdf} is behind VMD ${real.bdf}: its DMA carries the VMD endpoint's requester ID`,
      });
      return;
    }
  }
  if (st.aliases.get(d.bdf)?.xlateRoot) {
    alloc(st, d.bdf, RULES.reworkXlate, `${d.bdf} is where the translation unit sits (quirk): a group of its own`);
    return;
  }
  const pf = d.dev.physfn && st.topo.devices.has(d.dev.physfn) ? st.topo.devices.get(d.dev.physfn)! : d;
  if (!pf.onRootBus && pf.busSelf !== null) {
    const g = st.groupOf.get(pf.busSelf);
    if (g !== undefined && st.groups.get(g)!.nonIsolated) {
      join(st, d.bdf, g, {
        joined: pf.busSelf,
        rule: RULES.reworkUpstream,
        message: `${d.bdf} joined ${pf.busSelf}: everything below a non-isolated bus shares one group`,
      });
      return;
    }
  }
  const iso = busIsolated(st, pf);
  switch (iso.state) {
    case 'isolated': {
      // pci_reachable_set() over pci_devs_are_same_group() on the bus.
      const set = new Set<TopoDevice>([d]);
      const queue = [d];
      while (queue.length) {
        const cur = queue.shift()!;
        for (const o of new Set([...slotMatesOf(st, cur), ...aliasCandidates(st, cur)])) {
          if (set.has(o)) continue;
          if (devsAreDmaAliases(st.topo, cur, o, st.aliases) || mfdsSameGroup(st, cur, o)) {
            set.add(o);
            queue.push(o);
          }
        }
      }
      set.delete(d);
      for (const o of [...set].sort((x, y) => x.devfn - y.devfn)) {
        const g = st.groupOf.get(o.bdf);
        if (g !== undefined) {
          join(st, d.bdf, g, {
            joined: o.bdf,
            rule: RULES.reworkFunction,
            message: `${d.bdf} joined ${o.bdf}: same multifunction device without ACS isolation, or DMA aliases (${iso.why})`,
          });
          return;
        }
      }
      if (set.size > 0)
        alloc(
          st,
          d.bdf,
          RULES.reworkFunction,
          `${d.bdf} starts a group for its functions/aliases ${[...set].map((x) => s(x.bdf)).join(' ')} (${iso.why})`,
          true,
        );
      else alloc(st, d.bdf, RULES.isolated, `${d.bdf} has a group of its own: ${iso.why}`);
      return;
    }
    case 'bridge-non-isolated':
    case 'pcie-non-isolated': {
      const self = pf.busSelf!;
      const g = st.groupOf.get(self);
      if (g !== undefined) {
        st.groups.get(g)!.nonIsolated = true;
        join(st, d.bdf, g, { joined: self, rule: RULES.reworkBus, message: `${d.bdf} joined ${self}: its bus is not isolated (${iso.why})` });
      } else alloc(st, d.bdf, RULES.reworkBus, `${d.bdf}: its bus is not isolated (${iso.why}) but ${self} has no group`, true);
      return;
    }
    case 'bus-non-isolated':
    case 'switch-dsp-non-isolated': {
      for (const o of st.topo.byBus.get(d.busKey) ?? []) {
        const g = st.groupOf.get(o.bdf);
        if (g !== undefined) {
          st.groups.get(g)!.nonIsolated = true;
          join(st, d.bdf, g, {
            joined: o.bdf,
            rule: RULES.reworkSharedBus,
            message: `${d.bdf} joined ${o.bdf}: devices on one non-isolated bus share a group (${iso.why})`,
          });
          return;
        }
      }
      alloc(st, d.bdf, RULES.reworkSharedBus, `${d.bdf} starts the group of its non-isolated bus (${iso.why})`, true);
      return;
    }
  }
};

/** Derive IOMMU groups from the device model, with the reason each device is where it is. */
export const deriveGroups = (snap: HostSnapshot, options: DeriveOptions = {}): DerivedGrouping => {
  const rules = options.rules ?? 'mainline';
  const topo = buildTopology(snap, options.kernelRelease ?? null);
  const aliases = new Map<Bdf, AliasInfo>();
  for (const t of topo.devices.values()) aliases.set(t.bdf, aliasInfo(topo, t));
  const st: State = {
    topo,
    aliases,
    acs: { assumeAcs: new Set(options.assumeAcs ?? []), intelPchEnableOk: options.intelPchEnableOk, enhanced: rules === 'acs-rework' },
    groupOf: new Map(),
    groups: new Map(),
    next: 0,
    unknown: new Map(),
    acsCache: new Map(),
    slotCache: new Map(),
    pathCache: new Map(),
  };
  const translated = options.translated ? new Set(options.translated) : null;
  const notes: string[] = [];
  for (const bdf of topo.probeOrder) {
    if (translated && !translated.has(bdf)) continue;
    const d = topo.devices.get(bdf)!;
    if (rules === 'acs-rework') deriveRework(st, d);
    else deriveMainline(st, d);
  }
  notes.push(
    `rules: ${rules}; ACS and DMA-alias quirks from ${QUIRK_TABLE_SOURCE}${topo.kernel ? `, entries up to kernel ${topo.kernel.join('.')}` : ' (kernel unknown: newest table)'}`,
  );
  if (translated) {
    const skipped = [...topo.devices.keys()].filter((b) => !translated.has(b));
    if (skipped.length) notes.push(`not translated by the IOMMU (no group, as the kernel left them): ${skipped.join(' ')}`);
  }
  for (const [bdf, why] of st.unknown) notes.push(`ACS unknown for ${bdf}: ${why}; assumed NOT isolated, so its groups may be too large`);
  if (topo.ivrsAssumed && [...st.groups.values()].some((g) => g.reasons.some((r) => r.message.includes('IVRS')))) {
    notes.push('AMD southbridge ACS quirk applied assuming the firmware has an IVRS table (AMD-Vi)');
  }
  if ([...st.acsCache.values(), ...st.pathCache.values()].some((v) => ('verdict' in v ? v.verdict : v).quirk?.kind === 'intel-pch')) {
    notes.push(
      'Intel PCH root port ACS quirk assumed to be enabled (the kernel logs "Intel PCH root port ACS workaround enabled"; if it logged "Failed to enable Intel PCH ACS quirk", these ports are not isolated)',
    );
  }
  if (st.acs.assumeAcs?.size) notes.push(`what-if: ACS assumed on ${[...st.acs.assumeAcs].join(' ')}`);
  const underivable: string[] = [];
  const blind = [...topo.devices.values()].filter((t) => t.pcie === null && (!translated || translated.has(t.bdf)));
  if (blind.length) {
    underivable.push(
      `${blind.length} of ${topo.devices.size} devices have no usable config space (${[...new Set(blind.map((t) => `${t.dev.configSize} bytes`))].join(', ')}): PCIe port type, multifunction and ACS are unknown (${blind
        .slice(0, 4)
        .map((t) => t.bdf)
        .join(' ')}${blind.length > 4 ? ' ...' : ''})`,
    );
  }
  const unknownAcs = [...st.unknown.keys()].filter((b) => topo.devices.get(b)!.pcie !== null);
  if (unknownAcs.length)
    underivable.push(`ACS registers of ${unknownAcs.join(' ')} are not in the input (config space stops at 256 bytes) and the grouping depends on them`);
  for (const g of st.groups.values()) {
    if (g.devices.length < 2) continue;
    for (const r of g.reasons) if (r.joined === null) r.message = r.message.replace('has a group of its own', 'starts this group');
  }
  const key = (b: Bdf): number => topo.devices.get(b)!.order;
  const groups = [...st.groups.values()].map(({ id, devices, reasons }) => ({
    id,
    devices: devices.length > 1 ? [...devices].sort((x, y) => key(x) - key(y)) : [...devices],
    reasons: reasons.length > 1 ? [...reasons].sort((x, y) => key(x.device) - key(y.device)) : [...reasons],
  }));
  return { rules, groups, groupOf: st.groupOf, notes, underivable };
};
