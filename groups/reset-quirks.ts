// The kernel's reset methods and the quirk tables that change them, carried as data.
//
// Source: drivers/pci/pci.c (pci_reset_fn_methods[], pci_init_reset_methods) and drivers/pci/quirks.c
// (pci_dev_reset_methods[], quirk_no_flr, quirk_no_flr_snet, quirk_no_bus_reset,
// quirk_nvidia_no_bus_reset, quirk_no_pm_reset) as read at CachyOS/linux@019736d7, the tree the ACS
// tables come from. `since` is the first mainline release with the entry as far as the history we
// could read tells; several entries were also backported to stable kernels (the AMD 0x7901 no-FLR
// entry reached 6.1.y, for one), so an older release may carry an entry we skip. Entries newer than
// the host's kernel are skipped, as in groups/quirks.ts.

/** reset_method's names, in the order the kernel tries them (pci_reset_fn_methods[]). */
export const RESET_METHODS = ['device_specific', 'acpi', 'flr', 'af_flr', 'pm', 'bus', 'cxl_bus'] as const;
export type ResetMethod = (typeof RESET_METHODS)[number];

/** The release that added each method; the `reset_method` attribute itself came with 5.15. */
export const RESET_METHOD_SINCE: Readonly<Record<ResetMethod, string>> = {
  device_specific: '2.6',
  acpi: '5.15',
  flr: '2.6',
  af_flr: '2.6',
  pm: '2.6',
  bus: '2.6',
  cxl_bus: '6.10',
};
export const RESET_METHOD_ATTRIBUTE_SINCE = '5.15';

/** Methods that reset only the function itself (the rest reset a whole secondary bus). */
export const FUNCTION_RESETS: ReadonlySet<string> = new Set(['device_specific', 'acpi', 'flr', 'af_flr', 'pm']);

export type DeviceResetKind =
  /** The probe always answers yes (reset_intel_82599_sfp_virtfn, reset_ivb_igd, reset_hinic_vf_dev). */
  | 'always'
  /** reset_chelsio_generic_dev: only T4-based devices, (device & 0xf000) == 0x4000. */
  | 'chelsio-t4'
  /** nvme_disable_and_flr: an NVMe-class function with a usable FLR and BAR 0 assigned. */
  | 'nvme-flr'
  /** delay_250ms_after_flr: answers as FLR does. */
  | 'flr-delay';

export interface DeviceResetQuirk {
  vendor: number;
  /** null = PCI_ANY_ID */
  device: number | null;
  kind: DeviceResetKind;
  name: string;
  since: string;
}

const V = {
  INTEL: 0x8086,
  SAMSUNG: 0x144d,
  SOLIDIGM: 0x025e,
  CHELSIO: 0x1425,
  HUAWEI: 0x19e5,
  AMD: 0x1022,
  ATI: 0x1002,
  MEDIATEK: 0x14c3,
  SOLIDRUN: 0xd063,
  NVIDIA: 0x10de,
  ATHEROS: 0x168c,
  QCOM: 0x17cb,
  CAVIUM: 0x177d,
  TI: 0x104c,
  ASMEDIA: 0x1b21,
  MELLANOX: 0x15b3,
} as const;

/** pci_dev_reset_methods[] in table order: the first entry matching vendor and device answers alone. */
export const DEVICE_RESET_QUIRKS: readonly DeviceResetQuirk[] = [
  { vendor: V.INTEL, device: 0x10ed, kind: 'always', name: 'Intel 82599 VF: FLR without the DevCap bit', since: '2.6' },
  { vendor: V.INTEL, device: 0x0156, kind: 'always', name: 'Intel Ivy Bridge graphics: display engine reset', since: '3.7' },
  { vendor: V.INTEL, device: 0x0166, kind: 'always', name: 'Intel Ivy Bridge graphics: display engine reset', since: '3.7' },
  { vendor: V.SAMSUNG, device: 0xa804, kind: 'nvme-flr', name: 'Samsung SM961/PM961: NVMe disabled before FLR', since: '4.20' },
  { vendor: V.INTEL, device: 0x0953, kind: 'flr-delay', name: 'Intel DC P3700: 250 ms after FLR', since: '4.20' },
  { vendor: V.INTEL, device: 0x0a54, kind: 'flr-delay', name: 'Intel NVMe: 250 ms after FLR', since: '5.3' },
  { vendor: V.SOLIDIGM, device: 0xf1ac, kind: 'flr-delay', name: 'Solidigm P44 Pro: 250 ms after FLR', since: '6.4' },
  { vendor: V.CHELSIO, device: null, kind: 'chelsio-t4', name: 'Chelsio T4: FLR with bus mastering and MSI-X kept on', since: '3.8' },
  { vendor: V.HUAWEI, device: 0x375e, kind: 'always', name: 'Huawei HiNIC VF: firmware-assisted FLR', since: '5.12' },
];

export interface ResetFlagQuirk {
  vendor: number;
  /** null = PCI_ANY_ID */
  device: number | null;
  /** Only these devices of the vendor: (device & mask) == value. */
  deviceMask?: { mask: number; value: number };
  /** Only this revision. */
  revision?: number;
  /** Only this class (class >> 8, as DECLARE_PCI_FIXUP_CLASS_HEADER with shift 8 matches). */
  classCode?: number;
  /** quirk_no_pm_reset: not for a device on a root bus (nothing else could reset it). */
  offRootBusOnly?: boolean;
  name: string;
  since: string;
}

/** quirk_no_flr and quirk_no_flr_snet: PCI_DEV_FLAGS_NO_FLR_RESET (neither flr nor af_flr). */
export const NO_FLR_QUIRKS: readonly ResetFlagQuirk[] = [
  { vendor: V.INTEL, device: 0x1502, name: 'Intel 82579LM: FLR hangs it', since: '4.7' },
  { vendor: V.INTEL, device: 0x1503, name: 'Intel 82579V: FLR hangs it', since: '4.7' },
  { vendor: V.AMD, device: 0x1487, name: 'AMD Starship/Matisse HD Audio: FLR hangs it', since: '5.8' },
  { vendor: V.AMD, device: 0x149c, name: 'AMD Matisse USB 3.0: FLR hangs it', since: '5.8' },
  { vendor: V.AMD, device: 0x148c, name: 'AMD Starship USB 3.0: FLR hangs it', since: '5.9' },
  { vendor: V.AMD, device: 0x7901, name: 'AMD FCH AHCI: FLR leaves it unusable', since: '6.3' },
  { vendor: V.SOLIDRUN, device: 0x1000, revision: 0x01, name: 'SolidRun SNET DPU rev 1: FLR hangs it', since: '6.5' },
  { vendor: V.MEDIATEK, device: 0x0616, name: 'MediaTek MT7922: FLR leaves it unusable', since: '6.14' },
  { vendor: V.AMD, device: 0x1502, name: 'AMD NPU: FLR hangs it', since: '6.15' },
  { vendor: V.AMD, device: 0x17f0, name: 'AMD NPU: FLR hangs it', since: '6.15' },
  { vendor: V.MEDIATEK, device: 0x7925, name: 'MediaTek MT7925: FLR leaves it unusable', since: '6.19' },
];

/** quirk_no_bus_reset and quirk_nvidia_no_bus_reset: PCI_DEV_FLAGS_NO_BUS_RESET. */
export const NO_BUS_RESET_QUIRKS: readonly ResetFlagQuirk[] = [
  ...[0x0030, 0x0032, 0x003c].map((device) => ({ vendor: V.ATHEROS, device, name: 'Atheros AR9xxx: unreachable after a bus reset', since: '3.18' })),
  { vendor: V.ATHEROS, device: 0x0033, name: 'Atheros AR958x: unreachable after a bus reset', since: '4.1' },
  { vendor: V.ATHEROS, device: 0x0034, name: 'Atheros AR9462: unreachable after a bus reset', since: '4.12' },
  { vendor: V.ATHEROS, device: 0x003e, name: 'Atheros QCA6174: unreachable after a bus reset', since: '5.2' },
  { vendor: V.CAVIUM, device: 0xa100, name: 'Cavium CN8xxx root port: children fail after a bus reset', since: '4.20' },
  { vendor: V.TI, device: 0xb005, name: 'TI KeyStone C667X: stops working after a bus reset', since: '5.11' },
  {
    vendor: V.NVIDIA,
    device: null,
    deviceMask: { mask: 0xffc0, value: 0x2340 },
    name: 'NVIDIA GPU (0x2340-0x237f): does not survive a bus reset',
    since: '6.6',
  },
  { vendor: V.ASMEDIA, device: 0x1164, name: 'ASMedia ASM1164: fails to retrain after a bus reset', since: '6.11' },
  { vendor: V.QCOM, device: 0x1103, name: 'Qualcomm WCN6855: fails after a bus reset', since: '6.17' },
  { vendor: V.QCOM, device: 0x1107, name: 'Qualcomm WCN7850: fails after a bus reset', since: '6.17' },
  { vendor: V.QCOM, device: 0x0308, name: 'Qualcomm SDX62/SDX65: fails after a bus reset', since: '6.17' },
  { vendor: V.NVIDIA, device: 0x22ce, name: 'NVIDIA GB10 root port: link does not retrain after a bus reset', since: '6.19' },
  { vendor: V.NVIDIA, device: 0x22d0, name: 'NVIDIA GB10 root port: link does not retrain after a bus reset', since: '6.19' },
];

/** quirk_no_pm_reset: PCI_DEV_FLAGS_NO_PM_RESET (a D3hot->D0 that claims to reset but does not). */
export const NO_PM_RESET_QUIRKS: readonly ResetFlagQuirk[] = [
  {
    vendor: V.ATI,
    device: null,
    classCode: 0x0300,
    offRootBusOnly: true,
    name: 'AMD/ATI VGA: D3hot->D0 does not reset it (the AMD GPU reset problem)',
    since: '4.3',
  },
  ...[0xcb84, 0xcf6c, 0xcf70].map((device) => ({
    vendor: V.MELLANOX,
    device,
    offRootBusOnly: true,
    name: 'Mellanox Spectrum switch: D3hot->D0 does not reset it',
    since: '5.18',
  })),
  { vendor: V.MELLANOX, device: 0xcf80, offRootBusOnly: true, name: 'Mellanox Spectrum-4 switch: D3hot->D0 does not reset it', since: '6.3' },
];

export const RESET_QUIRK_TABLE_SOURCE = 'drivers/pci/quirks.c and drivers/pci/pci.c at CachyOS/linux@019736d7 (mainline v6.17/6.18 era)';
