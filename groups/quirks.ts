// The kernel's PCI quirk tables that change IOMMU grouping, carried as data.
//
// Source: drivers/pci/quirks.c as read at CachyOS/linux@019736d7 (a tree tracking mainline
// v6.17/6.18; it has the QCOM Glymur entry). Facts only, re-expressed as data:
//   pci_dev_acs_enabled[]            -> ACS_QUIRKS (order matters: first entry that answers wins)
//   pci_quirk_intel_pch_acs_ids[]    -> INTEL_PCH_ACS_IDS
//   pci_quirk_intel_spt_pch_acs_match -> INTEL_SPT_PCH_RANGES
//   quirk_dma_func0/func1_alias, fixed_dma_alias_tbl, quirk_mic_x200_dma_alias,
//   quirk_pex_vca_alias, quirk_use_pcie_bridge_dma_alias, quirk_bridge_cavm_thrx2_pcie_root,
//   quirk_aspeed_pci_bridge_no_alias -> DMA_ALIAS_QUIRKS
// `since` is the first mainline release that carried the entry, as far as the git history we
// could read tells (approximate for a few entries; none of the approximate ones is an x86 part
// that appears in our real-machine data). Entries newer than the host's kernel are skipped.

export type AcsQuirkKind =
  /** pci_quirk_amd_sb_acs: multifunction devices on the root bus, only when an ACPI IVRS table exists (AMD-Vi). */
  | 'amd-southbridge'
  /** pci_quirk_mf_endpoint_acs: SV|TB|RR|CR|UF|DT treated as provided. */
  | 'mf-endpoint'
  /** pci_quirk_rciep_acs: Intel RCiEPs (PCIe type 9) only; SV|RR|CR|UF provided. */
  | 'intel-rciep'
  /** pci_quirk_intel_pch_acs: listed PCH root ports; isolated only if the enable quirk succeeded. */
  | 'intel-pch'
  /** pci_quirk_intel_spt_pch_acs: ACS control is a dword at cap+8, not a word at cap+6. */
  | 'intel-spt-pch'
  /** pci_quirk_cavium_acs: ThunderX1/2/3 root ports. */
  | 'cavium'
  /** Root ports / devices that always isolate SV|RR|CR|UF (X-Gene, Ampere, QCOM, NXP, iProc, Loongson). */
  | 'isolated-rp'
  /** pci_quirk_al_acs: Annapurna root ports. */
  | 'annapurna'
  /** pci_quirk_zhaoxin_pcie_ports_acs: listed root/downstream ports. */
  | 'zhaoxin-ports'
  /** pci_quirk_wangxun_nic_acs: listed NIC ids. */
  | 'wangxun';

export interface AcsQuirk {
  vendor: number;
  /** null = PCI_ANY_ID */
  device: number | null;
  kind: AcsQuirkKind;
  name: string;
  since: string;
}

const V = {
  ATI: 0x1002,
  AMD: 0x1022,
  SOLARFLARE: 0x1924,
  INTEL: 0x8086,
  QCOM: 0x17cb,
  HXT: 0x1dbf,
  CAVIUM: 0x177d,
  AMCC: 0x10e8,
  AMPERE: 0x1def,
  BROADCOM: 0x14e4,
  LOONGSON: 0x0014,
  ANNAPURNA: 0x1c36,
  ZHAOXIN: 0x1d17,
  NXP: 0x1957,
  WANGXUN: 0x8088,
  RICOH: 0x1180,
  GLENFLY: 0x6766,
  MARVELL_EXT: 0x1b4b,
  TTI: 0x1103,
  JMICRON: 0x197b,
  ADAPTEC2: 0x9005,
  ASMEDIA: 0x1b21,
  ASPEED: 0x1a03,
} as const;

const q = (vendor: number, device: number | null, kind: AcsQuirkKind, name: string, since: string): AcsQuirk => ({ vendor, device, kind, name, since });
const many = (vendor: number, devices: number[], kind: AcsQuirkKind, name: string, since: string): AcsQuirk[] =>
  devices.map((d) => q(vendor, d, kind, name, since));

/** pci_dev_acs_enabled[] in table order. */
export const ACS_QUIRKS: readonly AcsQuirk[] = [
  ...many(V.ATI, [0x4385, 0x439c, 0x4383, 0x439d, 0x4384, 0x4399], 'amd-southbridge', 'AMD/ATI SBx00 southbridge function', '3.7'),
  ...many(V.AMD, [0x780f, 0x7809], 'amd-southbridge', 'AMD FCH function', '3.17'),
  ...many(V.SOLARFLARE, [0x0903, 0x0923, 0x0a03], 'mf-endpoint', 'Solarflare multifunction NIC', '3.10'),
  ...many(
    V.INTEL,
    [
      0x10c6, 0x10db, 0x10dd, 0x10e1, 0x10f1, 0x10f7, 0x10f8, 0x10f9, 0x10fa, 0x10fb, 0x10fc, 0x1507, 0x1514, 0x151c, 0x1529, 0x152a, 0x154d, 0x154f, 0x1551,
      0x1558,
    ],
    'mf-endpoint',
    'Intel 82598/82599/X520/X540 multifunction NIC',
    '3.12',
  ),
  ...many(V.INTEL, [0x1509, 0x150e, 0x150f, 0x1510, 0x1511, 0x1516, 0x1527], 'mf-endpoint', 'Intel 82580 multifunction NIC', '3.15'),
  ...many(V.INTEL, [0x10c9, 0x10e6, 0x10e7, 0x10e8, 0x150a, 0x150d, 0x1518, 0x1526], 'mf-endpoint', 'Intel 82576 multifunction NIC', '3.15'),
  ...many(V.INTEL, [0x10a7, 0x10a9, 0x10d6], 'mf-endpoint', 'Intel 82575 multifunction NIC', '3.15'),
  ...many(V.INTEL, [0x1521, 0x1522, 0x1523, 0x1524], 'mf-endpoint', 'Intel I350 multifunction NIC', '3.15'),
  ...many(V.INTEL, [0x105e, 0x105f, 0x1060, 0x10d9], 'mf-endpoint', 'Intel 82571 NIC', '3.15'),
  ...many(V.INTEL, [0x15b7, 0x15b8], 'mf-endpoint', 'Intel I219 NIC', '4.7'),
  q(V.INTEL, null, 'intel-rciep', 'Intel root-complex integrated endpoint', '4.20'),
  ...many(V.QCOM, [0x0400, 0x0401], 'isolated-rp', 'QCOM QDF2xxx root port', '4.11'),
  q(V.QCOM, 0x0115, 'isolated-rp', 'QCOM SA8775P root port', '6.12'),
  q(V.QCOM, 0x0111, 'isolated-rp', 'QCOM Hamoa root port', '6.16'),
  q(V.QCOM, 0x0120, 'isolated-rp', 'QCOM Glymur root port', '6.18'),
  q(V.HXT, 0x0401, 'isolated-rp', 'HXT SD4800 root port', '4.16'),
  q(V.INTEL, null, 'intel-pch', 'Intel PCH root port without ACS capability', '3.14'),
  q(V.INTEL, null, 'intel-spt-pch', 'Intel Sunrise/Union Point PCH root port (ACS control at cap+8)', '4.10'),
  q(0x19a2, 0x0710, 'mf-endpoint', 'Emulex BE3-R', '4.2'),
  q(0x10df, 0x0720, 'mf-endpoint', 'Emulex Skyhawk-R', '4.2'),
  q(V.CAVIUM, null, 'cavium', 'Cavium ThunderX root port', '4.7'),
  ...many(V.CAVIUM, [0xa026, 0xa059, 0xa060], 'mf-endpoint', 'Cavium multifunction device', '4.20'),
  q(V.AMCC, 0xe004, 'isolated-rp', 'APM X-Gene root port', '4.19'),
  ...many(V.AMPERE, [0xe005, 0xe006, 0xe007, 0xe008, 0xe009, 0xe00a, 0xe00b, 0xe00c], 'isolated-rp', 'Ampere root port', '5.12'),
  ...many(V.BROADCOM, [0x16d7], 'mf-endpoint', 'Broadcom multifunction NIC', '5.3'),
  ...many(V.BROADCOM, [0x1750, 0x1751, 0x1752, 0x1760, 0x1761, 0x1762, 0x1763], 'mf-endpoint', 'Broadcom multifunction NIC', '6.3'),
  q(V.BROADCOM, 0xd714, 'isolated-rp', 'Broadcom iProc PAXB root port', '5.12'),
  ...many(V.LOONGSON, [0x3c09, 0x3c19, 0x3c29, 0x7a09, 0x7a19, 0x7a29, 0x7a39, 0x7a49, 0x7a59, 0x7a69], 'isolated-rp', 'Loongson root port', '6.1'),
  q(V.ANNAPURNA, 0x0031, 'annapurna', 'Amazon Annapurna root port', '5.6'),
  ...many(V.ZHAOXIN, [0x3038, 0x3104, 0x9083], 'mf-endpoint', 'Zhaoxin multifunction device', '5.8'),
  ...many(
    V.NXP,
    [
      0x8d81, 0x8da1, 0x8d83, 0x8d80, 0x8da0, 0x8d82, 0x8d90, 0x8db0, 0x8d92, 0x8d91, 0x8db1, 0x8d93, 0x8d89, 0x8da9, 0x8d8b, 0x8d88, 0x8da8, 0x8d8a, 0x8d98,
      0x8db8, 0x8d9a, 0x8d99, 0x8db9, 0x8d9b,
    ],
    'isolated-rp',
    'NXP LX2xx0 root port',
    '5.6',
  ),
  q(V.ZHAOXIN, null, 'zhaoxin-ports', 'Zhaoxin root/downstream port', '5.8'),
  q(V.WANGXUN, null, 'wangxun', 'Wangxun NIC', '6.1'),
];

/** pci_quirk_intel_pch_acs_ids[]: PCH root ports without an ACS capability (Red Hat bz 1037684). */
export const INTEL_PCH_ACS_IDS: ReadonlySet<number> = new Set([
  // Ibexpeak
  0x3b42, 0x3b43, 0x3b44, 0x3b45, 0x3b46, 0x3b47, 0x3b48, 0x3b49, 0x3b4a, 0x3b4b, 0x3b4c, 0x3b4d, 0x3b4e, 0x3b4f, 0x3b50, 0x3b51,
  // Cougarpoint
  0x1c10, 0x1c11, 0x1c12, 0x1c13, 0x1c14, 0x1c15, 0x1c16, 0x1c17, 0x1c18, 0x1c19, 0x1c1a, 0x1c1b, 0x1c1c, 0x1c1d, 0x1c1e, 0x1c1f,
  // Pantherpoint
  0x1e10, 0x1e11, 0x1e12, 0x1e13, 0x1e14, 0x1e15, 0x1e16, 0x1e17, 0x1e18, 0x1e19, 0x1e1a, 0x1e1b, 0x1e1c, 0x1e1d, 0x1e1e, 0x1e1f,
  // Lynxpoint-H
  0x8c10, 0x8c11, 0x8c12, 0x8c13, 0x8c14, 0x8c15, 0x8c16, 0x8c17, 0x8c18, 0x8c19, 0x8c1a, 0x8c1b, 0x8c1c, 0x8c1d, 0x8c1e, 0x8c1f,
  // Lynxpoint-LP
  0x9c10, 0x9c11, 0x9c12, 0x9c13, 0x9c14, 0x9c15, 0x9c16, 0x9c17, 0x9c18, 0x9c19, 0x9c1a, 0x9c1b,
  // Wildcat
  0x9c90, 0x9c91, 0x9c92, 0x9c93, 0x9c94, 0x9c95, 0x9c96, 0x9c97, 0x9c98, 0x9c99, 0x9c9a, 0x9c9b,
  // Patsburg (X79)
  0x1d10, 0x1d12, 0x1d14, 0x1d16, 0x1d18, 0x1d1a, 0x1d1c, 0x1d1e,
  // Wellsburg (X99)
  0x8d10, 0x8d11, 0x8d12, 0x8d13, 0x8d14, 0x8d15, 0x8d16, 0x8d17, 0x8d18, 0x8d19, 0x8d1a, 0x8d1b, 0x8d1c, 0x8d1d, 0x8d1e,
  // Lynx Point (9 series)
  0x8c90, 0x8c92, 0x8c94, 0x8c96, 0x8c98, 0x8c9a, 0x8c9c, 0x8c9e,
]);

/** pci_quirk_intel_spt_pch_acs_match(): Sunrise Point, Union Point, 7th/8th gen mobile root ports. */
export const INTEL_SPT_PCH_RANGES: readonly [number, number][] = [
  [0xa110, 0xa11f],
  [0xa167, 0xa16a],
  [0xa290, 0xa29f],
  [0xa2e7, 0xa2ee],
  [0x9d10, 0x9d1b],
];

/** pci_quirk_cavium_acs_match(). */
export const CAVIUM_RP_RANGES: readonly [number, number][] = [
  [0xa000, 0xa7ff],
  [0xaf84, 0xaf84],
  [0xb884, 0xb884],
];
/** pci_quirk_zhaoxin_pcie_ports_acs(). */
export const ZHAOXIN_PORT_RANGES: readonly [number, number][] = [
  [0x0710, 0x071e],
  [0x0721, 0x0721],
  [0x0723, 0x0752],
];
/** pci_quirk_wangxun_nic_acs(). */
export const WANGXUN_NIC_RANGES: readonly [number, number][] = [
  [0x0100, 0x010f],
  [0x1001, 0x1001],
  [0x2001, 0x2001],
  [0x5010, 0x5010],
  [0x5025, 0x5025],
  [0x5040, 0x5040],
  [0x5110, 0x5110],
  [0x5125, 0x5125],
  [0x5140, 0x5140],
];

export const inRanges = (id: number, ranges: readonly [number, number][]): boolean => ranges.some(([a, b]) => id >= a && id <= b);

export type DmaAliasKind =
  /** quirk_dma_func0_alias: functions != 0 also DMA as function 0. */
  | 'func0'
  /** quirk_dma_func1_alias: functions != 1 also DMA as function 1 (phantom function). */
  | 'func1'
  /** quirk_fixed_dma_alias: a fixed devfn (subsystem-matched). */
  | 'fixed'
  /** quirk_mic_x200_dma_alias: devfns 10.0, 11.0, 12.3. */
  | 'mic-x200'
  /** quirk_pex_vca_alias: every slot, functions 0-4: the whole card is one group. */
  | 'pex-vca'
  /** quirk_use_pcie_bridge_dma_alias: a non-PCIe-looking PCIe-to-PCI bridge; alias (secondary bus, 00.0). */
  | 'pcie-bridge-alias'
  /** quirk_bridge_cavm_thrx2_pcie_root: stop the alias walk at this bridge. */
  | 'xlate-root'
  /** quirk_aspeed_pci_bridge_no_alias: this PCIe-to-PCI bridge forwards the requester ID. */
  | 'bridge-no-alias';

export interface DmaAliasQuirk {
  vendor: number;
  device: number;
  kind: DmaAliasKind;
  name: string;
  since: string;
  subsystem?: { vendor: number; device: number };
  /** For 'fixed': the aliased devfn. */
  devfn?: number;
}

const a = (vendor: number, device: number, kind: DmaAliasKind, name: string, since: string, extra: Partial<DmaAliasQuirk> = {}): DmaAliasQuirk => ({
  vendor,
  device,
  kind,
  name,
  since,
  ...extra,
});

export const DMA_ALIAS_QUIRKS: readonly DmaAliasQuirk[] = [
  a(V.RICOH, 0xe832, 'func0', 'Ricoh card reader uses function 0 as requester ID', '3.17'),
  a(V.RICOH, 0xe476, 'func0', 'Ricoh card reader uses function 0 as requester ID', '3.17'),
  a(V.GLENFLY, 0x3d40, 'func0', 'Glenfly uses function 0 as requester ID', '6.3'),
  a(V.GLENFLY, 0x3d41, 'func0', 'Glenfly uses function 0 as requester ID', '6.3'),
  ...[0x9120, 0x9123, 0x9125, 0x9128, 0x9130, 0x9170, 0x9172, 0x917a, 0x9182, 0x9183, 0x91a0, 0x9215, 0x9220, 0x9230, 0x9235].map((d) =>
    a(V.MARVELL_EXT, d, 'func1', `Marvell 88SE${d.toString(16)} DMAs as phantom function 1`, '3.17'),
  ),
  a(V.TTI, 0x0642, 'func1', 'HighPoint/TTI DMAs as function 1', '4.0'),
  a(V.TTI, 0x0645, 'func1', 'HighPoint/TTI DMAs as function 1', '4.15'),
  a(V.JMICRON, 0x2393, 'func1', 'JMicron JMB388 ESD DMAs as function 1', '3.17'),
  a(0x1c28, 0x0122, 'func1', 'Lite-On/Plextor M6E DMAs as function 1', '4.0'),
  a(V.ADAPTEC2, 0x0285, 'fixed', 'Adaptec 3405 DMA engine at devfn 01.0', '4.0', { subsystem: { vendor: V.ADAPTEC2, device: 0x02bb }, devfn: 0x08 }),
  a(V.ADAPTEC2, 0x0285, 'fixed', 'Adaptec 3805 DMA engine at devfn 01.0', '4.0', { subsystem: { vendor: V.ADAPTEC2, device: 0x02bc }, devfn: 0x08 }),
  a(V.INTEL, 0x2260, 'mic-x200', 'Intel MIC x200 NTB alien requester IDs', '4.12'),
  a(V.INTEL, 0x2264, 'mic-x200', 'Intel MIC x200 NTB alien requester IDs', '4.12'),
  ...[0x2954, 0x2955, 0x2956, 0x2958, 0x2959, 0x295a].map((d) => a(V.INTEL, d, 'pex-vca', 'Intel VCA: every slot aliased', '4.20')),
  a(V.ASMEDIA, 0x1080, 'pcie-bridge-alias', 'ASM1083/1085 PCIe-to-PCI bridge without PCIe capability', '3.17'),
  a(0x10e3, 0x8113, 'pcie-bridge-alias', 'Tundra 8113 PCIe-to-PCI bridge', '3.17'),
  a(0x1283, 0x8892, 'pcie-bridge-alias', 'ITE 8892 PCIe-to-PCI bridge', '3.17'),
  a(0x1283, 0x8893, 'pcie-bridge-alias', 'ITE 8893 PCIe-to-PCI bridge', '4.0'),
  a(V.INTEL, 0x244e, 'pcie-bridge-alias', 'Intel 82801 PCI bridge', '4.3'),
  a(V.BROADCOM, 0x9000, 'xlate-root', 'Cavium ThunderX2 root: translation unit at this bridge', '4.13'),
  a(V.BROADCOM, 0x9084, 'xlate-root', 'Cavium ThunderX2 root: translation unit at this bridge', '4.13'),
  a(V.ASPEED, 0x1150, 'bridge-no-alias', 'ASPEED AST1150 forwards the requester ID (no bridge alias)', '6.19'),
];

/** "6.8.0-90-generic" -> [6, 8]; null when it does not start with a version. */
export const parseKernelVersion = (text: string | null | undefined): [number, number] | null => {
  if (!text) return null;
  const m = /(\d+)\.(\d+)/.exec(text);
  return m ? [parseInt(m[1]!, 10), parseInt(m[2]!, 10)] : null;
};

/** True when a quirk added in `since` is present in `kernel` (unknown kernel: newest table). */
export const quirkPresent = (since: string, kernel: [number, number] | null): boolean => {
  if (!kernel) return true;
  const s = parseKernelVersion(since)!;
  return kernel[0] > s[0] || (kernel[0] === s[0] && kernel[1] >= s[1]);
};

export const QUIRK_TABLE_SOURCE = 'drivers/pci/quirks.c at CachyOS/linux@019736d7 (mainline v6.17/6.18 era)';
