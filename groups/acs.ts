import type { Bdf } from '../model/bdf.js';
import { shortBdf } from '../model/bdf.js';
import {
  ACS_QUIRKS,
  type AcsQuirk,
  CAVIUM_RP_RANGES,
  INTEL_PCH_ACS_IDS,
  INTEL_SPT_PCH_RANGES,
  inRanges,
  quirkPresent,
  WANGXUN_NIC_RANGES,
  ZHAOXIN_PORT_RANGES,
} from './quirks.js';
import type { TopoDevice, Topology } from './topology.js';

// ACS predicates of drivers/pci/pci.c (pci_acs_enabled, pci_acs_flags_enabled, pci_acs_path_enabled)
// and the quirk dispatch of drivers/pci/quirks.c (pci_dev_specific_acs_enabled). Each answer says
// why, so a grouping can be explained.

export const ACS = { SV: 0x01, TB: 0x02, RR: 0x04, CR: 0x08, UF: 0x10, EC: 0x20, DT: 0x40 } as const;
/** drivers/iommu/iommu.c REQ_ACS_FLAGS (PCI_ACS_ISOLATED in the 2025 series). */
export const REQ_ACS_FLAGS = ACS.SV | ACS.RR | ACS.CR | ACS.UF;
// ACS Enhanced (the 2025 series' pci_regs.h additions).
export const ACS_ENHANCED = 0x80;
export const ACS_DSP_MT_RR = 0x200;
export const ACS_USP_MT_RR = 0x800;
const ENHANCED_CTRL_BITS = 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x1000;

export interface AcsVerdict {
  enabled: boolean;
  /** Where the answer came from. */
  source: 'assumed' | 'quirk' | 'capability' | 'port-type' | 'unknown';
  /** Short human text: "ACS control lacks RR|CR", "quirk: Intel RCiEP", ... */
  why: string;
  quirk?: AcsQuirk;
}

export interface AcsOptions {
  /** --assume-acs: treat these as providing every ACS flag (the question the override patch answers). */
  assumeAcs?: ReadonlySet<Bdf>;
  /** Whether pci_quirk_enable_intel_pch_acs() succeeded on listed PCH root ports (default: yes). */
  intelPchEnableOk?: boolean;
  /** The 2025 series: ACS Enhanced bits through pci_acs_ctrl_mask(). */
  enhanced?: boolean;
}

const bitNames = (flags: number): string =>
  (Object.keys(ACS) as (keyof typeof ACS)[]).filter((k) => flags & ACS[k]).join('|') +
  (flags & ACS_DSP_MT_RR ? `${flags & 0x7f ? '|' : ''}DSP_MT_RR` : '') +
  (flags & ACS_USP_MT_RR ? `${flags & (0x7f | ACS_DSP_MT_RR) ? '|' : ''}USP_MT_RR` : '');

const ctrlEnabled = (req: number, ena: number): boolean => (req & ena) === req;

// One quirk's answer: null = -ENOTTY/-ENODEV (not mine, keep looking), boolean = answered.
const quirkAnswer = (topo: Topology, t: TopoDevice, quirk: AcsQuirk, flags: number, options: AcsOptions): boolean | null => {
  const rp = t.pcie === true && t.type === 'root-port';
  const isolated4 = ACS.SV | ACS.RR | ACS.CR | ACS.UF;
  switch (quirk.kind) {
    case 'amd-southbridge':
      if (!t.multifunction || !t.onRootBus || !topo.ivrs) return null;
      return ctrlEnabled(flags & (ACS.RR | ACS.CR | ACS.EC | ACS.DT), ACS.RR | ACS.CR);
    case 'mf-endpoint':
      return ctrlEnabled(flags, ACS.SV | ACS.TB | ACS.RR | ACS.CR | ACS.UF | ACS.DT);
    case 'intel-rciep':
      if (!(t.pcie === true && t.type === 'rciep')) return null;
      return ctrlEnabled(flags, isolated4);
    case 'intel-pch':
      if (!rp || !INTEL_PCH_ACS_IDS.has(t.deviceId)) return null;
      return options.intelPchEnableOk === false ? ctrlEnabled(flags, 0) : ctrlEnabled(flags, isolated4);
    case 'intel-spt-pch': {
      if (!rp || !inRanges(t.deviceId, INTEL_SPT_PCH_RANGES) || !t.acs) return null;
      if (t.acs.sptCap32 === null || t.acs.sptCtrl32 === null) return null;
      const f = flags & (t.acs.sptCap32 | ACS.EC);
      return ctrlEnabled(f, t.acs.sptCtrl32);
    }
    case 'cavium':
      if (!rp || !inRanges(t.deviceId, CAVIUM_RP_RANGES)) return null;
      return ctrlEnabled(flags, isolated4);
    case 'isolated-rp':
      return ctrlEnabled(flags, isolated4);
    case 'annapurna':
      if (!rp) return null;
      return (flags & ~isolated4) === 0;
    case 'zhaoxin-ports':
      if (!(t.pcie === true && (t.type === 'root-port' || t.type === 'downstream-port'))) return null;
      return inRanges(t.deviceId, ZHAOXIN_PORT_RANGES) ? ctrlEnabled(flags, isolated4) : false;
    case 'wangxun':
      return inRanges(t.deviceId, WANGXUN_NIC_RANGES) ? ctrlEnabled(flags, isolated4) : false;
  }
};

// The table entries present in a topology's kernel, by vendor, in table order (built once per topology).
const quirkIndex = new WeakMap<Topology, Map<number, AcsQuirk[]>>();
const quirksByVendor = (topo: Topology): Map<number, AcsQuirk[]> => {
  let index = quirkIndex.get(topo);
  if (!index) {
    index = new Map();
    for (const quirk of ACS_QUIRKS) {
      if (!quirkPresent(quirk.since, topo.kernel)) continue;
      const list = index.get(quirk.vendor) ?? [];
      list.push(quirk);
      index.set(quirk.vendor, list);
    }
    quirkIndex.set(topo, index);
  }
  return index;
};

/** pci_dev_specific_acs_enabled(): the first table entry that answers. */
export const quirkAcs = (topo: Topology, t: TopoDevice, flags: number, options: AcsOptions = {}): AcsVerdict | null => {
  for (const quirk of quirksByVendor(topo).get(t.vendorId) ?? []) {
    if (quirk.device !== null && quirk.device !== t.deviceId) continue;
    const answer = quirkAnswer(topo, t, quirk, flags, options);
    if (answer === null) continue;
    const id = `${t.vendorId.toString(16).padStart(4, '0')}:${t.deviceId.toString(16).padStart(4, '0')}`;
    return {
      enabled: answer,
      source: 'quirk',
      quirk,
      why: `quirk: ${quirk.name} ${id} treated as ${answer ? 'isolated' : 'not isolated'}${quirk.kind === 'amd-southbridge' && topo.ivrsAssumed ? ' (assumes an AMD IOMMU IVRS table)' : ''}`,
    };
  }
  return null;
};

/** pci_acs_flags_enabled(): needs the capability; features the capability lacks count as enabled. */
export const acsFlagsEnabled = (t: TopoDevice, flags: number, options: AcsOptions = {}): AcsVerdict => {
  if (t.acs === undefined) return { enabled: false, source: 'unknown', why: `ACS of ${shortBdf(t.bdf)} unknown (config space is ${t.dev.configSize} bytes)` };
  if (t.acs === null) return { enabled: false, source: 'capability', why: 'no ACS capability' };
  let mask = ACS.EC | (t.acs.cap & 0x7f);
  if (options.enhanced) {
    mask = t.acs.cap & (ACS.SV | ACS.TB | ACS.RR | ACS.CR | ACS.UF | ACS.DT);
    if (t.acs.cap & ACS_ENHANCED) mask |= ENHANCED_CTRL_BITS;
  }
  const need = flags & mask;
  const missing = need & ~t.acs.ctrl;
  if (missing === 0) return { enabled: true, source: 'capability', why: `ACS control has ${bitNames(need) || 'every implemented flag'}` };
  return { enabled: false, source: 'capability', why: `ACS control lacks ${bitNames(missing)}` };
};

/** pci_acs_enabled(): quirks first, then by PCIe type. */
export const acsEnabled = (topo: Topology, t: TopoDevice, flags: number, options: AcsOptions = {}): AcsVerdict => {
  if (options.assumeAcs?.has(t.bdf)) return { enabled: true, source: 'assumed', why: 'assumed isolated (--assume-acs)' };
  const quirk = quirkAcs(topo, t, flags, options);
  if (quirk) return quirk;
  if (t.pcie === null) return { enabled: false, source: 'unknown', why: `PCIe type of ${shortBdf(t.bdf)} unknown (config space is ${t.dev.configSize} bytes)` };
  if (!t.pcie) return { enabled: false, source: 'port-type', why: 'conventional PCI: no ACS possible' };
  switch (t.type) {
    case 'pci-to-pcie-bridge':
    case 'pcie-to-pci-bridge':
    case 'rc-event-collector':
      return { enabled: false, source: 'port-type', why: `${t.type}: ACS never applies` };
    case 'downstream-port':
    case 'root-port':
      return acsFlagsEnabled(t, flags, options);
    case 'endpoint':
    case 'upstream-port':
    case 'legacy-endpoint':
    case 'rciep':
      if (!t.multifunction) return { enabled: true, source: 'port-type', why: `single-function ${t.type}` };
      return acsFlagsEnabled(t, flags, options);
    default:
      return { enabled: true, source: 'port-type', why: `${t.type}: no ACS rule applies` };
  }
};

export interface AcsPathVerdict {
  enabled: boolean;
  /** The first device on the path that is not isolated. */
  failing: Bdf | null;
  verdict: AcsVerdict;
}

/** pci_acs_path_enabled(start, NULL, flags): every device from start up to the root bus. */
export const acsPathEnabled = (topo: Topology, start: Bdf, flags: number, options: AcsOptions = {}): AcsPathVerdict => {
  let cur: TopoDevice | undefined = topo.devices.get(start);
  let last: AcsVerdict = { enabled: true, source: 'port-type', why: 'root bus' };
  while (cur) {
    const v = acsEnabled(topo, cur, flags, options);
    if (!v.enabled) return { enabled: false, failing: cur.bdf, verdict: v };
    last = v;
    if (cur.onRootBus || cur.busSelf === null) break;
    cur = topo.devices.get(cur.busSelf);
  }
  return { enabled: true, failing: null, verdict: last };
};
