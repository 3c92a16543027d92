import type { Bdf } from '../model/bdf.js';
import { DMA_ALIAS_QUIRKS, type DmaAliasQuirk, quirkPresent } from './quirks.js';
import type { TopoDevice, Topology } from './topology.js';

// DMA aliases (drivers/pci/search.c: pci_for_each_dma_alias, drivers/pci/pci.c:
// pci_devs_are_dma_aliases, pci_real_dma_dev) and the quirks that set them up.

export interface AliasInfo {
  /** devfns on the device's own bus it also DMAs as (dev->dma_alias_mask). */
  mask: Set<number>;
  quirks: DmaAliasQuirk[];
  /** PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS, PCI_DEV_FLAGS_BRIDGE_XLATE_ROOT, PCI_DEV_FLAGS_PCI_BRIDGE_NO_ALIAS. */
  pcieBridgeAlias: boolean;
  xlateRoot: boolean;
  bridgeNoAlias: boolean;
}

const DMA_ALIAS_BY_ID = new Map<number, DmaAliasQuirk[]>();
for (const q of DMA_ALIAS_QUIRKS) {
  const key = (q.vendor << 16) | q.device;
  DMA_ALIAS_BY_ID.set(key, [...(DMA_ALIAS_BY_ID.get(key) ?? []), q]);
}

const devfn = (slot: number, fn: number): number => (slot << 3) | fn;

export const aliasInfo = (topo: Topology, t: TopoDevice): AliasInfo => {
  const info: AliasInfo = { mask: new Set(), quirks: [], pcieBridgeAlias: false, xlateRoot: false, bridgeNoAlias: false };
  const slot = t.dev.slot;
  const fn = t.dev.function;
  for (const q of DMA_ALIAS_BY_ID.get((t.vendorId << 16) | t.deviceId) ?? []) {
    if (!quirkPresent(q.since, topo.kernel)) continue;
    let applied = true;
    switch (q.kind) {
      case 'func0':
        if (fn !== 0) info.mask.add(devfn(slot, 0));
        else applied = false;
        break;
      case 'func1':
        if (fn !== 1) info.mask.add(devfn(slot, 1));
        else applied = false;
        break;
      case 'fixed':
        if (q.subsystem && q.subsystem.vendor === t.subsystemVendorId && q.subsystem.device === t.subsystemDeviceId) info.mask.add(q.devfn!);
        else applied = false;
        break;
      case 'mic-x200':
        for (const d of [devfn(0x10, 0), devfn(0x11, 0), devfn(0x12, 3)]) info.mask.add(d);
        break;
      case 'pex-vca':
        for (let s = 0; s < 0x20; s++) for (let f = 0; f < 5; f++) info.mask.add(devfn(s, f));
        break;
      case 'pcie-bridge-alias': {
        const up = t.busSelf ? topo.devices.get(t.busSelf) : undefined;
        if (!t.onRootBus && t.dev.headerLayout === 'bridge' && t.pcie === false && up && up.pcie === true && up.type !== 'pcie-to-pci-bridge')
          info.pcieBridgeAlias = true;
        else applied = false;
        break;
      }
      case 'xlate-root':
        info.xlateRoot = true;
        break;
      case 'bridge-no-alias':
        info.bridgeNoAlias = true;
        break;
    }
    if (applied) info.quirks.push(q);
  }
  return info;
};

export type AliasStepKind = 'self' | 'quirk-alias' | 'real-dma-dev' | 'pcie-to-pci-bridge' | 'pci-to-pcie-bridge' | 'conventional-bridge';

export interface AliasStep {
  /** The device passed to the callback (the kernel records it as the last device seen). */
  device: Bdf;
  kind: AliasStepKind;
  /** The requester ID it stands for, "BB:DD.F". */
  requesterId: string;
}

const rid = (busKey: string, d: number): string => `${busKey.slice(-2)}:${(d >> 3).toString(16).padStart(2, '0')}.${d & 7}`;

/** pci_real_dma_dev(): devices in a VMD domain DMA as the VMD endpoint. */
export const realDmaDev = (topo: Topology, t: TopoDevice): TopoDevice => {
  const host = t.dev.hostBridgeDevice;
  return host && topo.devices.has(host) ? topo.devices.get(host)! : t;
};

/** The devices pci_for_each_dma_alias() calls back with, in order. */
export const dmaAliasWalk = (topo: Topology, t: TopoDevice, aliases: Map<Bdf, AliasInfo>): AliasStep[] => {
  const real = realDmaDev(topo, t);
  const steps: AliasStep[] = [{ device: real.bdf, kind: real === t ? 'self' : 'real-dma-dev', requesterId: rid(real.busKey, real.devfn) }];
  const info = aliases.get(real.bdf);
  for (const d of [...(info?.mask ?? [])].sort((x, y) => x - y)) steps.push({ device: real.bdf, kind: 'quirk-alias', requesterId: rid(real.busKey, d) });
  for (const b of real.chain) {
    const tmp = topo.devices.get(b)!;
    const tmpInfo = aliases.get(b);
    if (tmpInfo?.xlateRoot) break;
    if (tmp.pcie === true) {
      if (tmp.type === 'pcie-to-pci-bridge') {
        if (tmpInfo?.bridgeNoAlias) continue;
        steps.push({ device: b, kind: 'pcie-to-pci-bridge', requesterId: rid(tmp.secondaryBusKey ?? tmp.busKey, 0) });
      } else if (tmp.type === 'pci-to-pcie-bridge') {
        steps.push({ device: b, kind: 'pci-to-pcie-bridge', requesterId: rid(tmp.busKey, tmp.devfn) });
      }
      // Root, upstream and downstream ports pass the requester ID through.
    } else {
      // Conventional bridge (or one whose type cannot be read: the kernel would see no PCIe capability either way we guess).
      steps.push({
        device: b,
        kind: 'conventional-bridge',
        requesterId: tmpInfo?.pcieBridgeAlias ? rid(tmp.secondaryBusKey ?? tmp.busKey, 0) : rid(tmp.busKey, tmp.devfn),
      });
    }
  }
  return steps;
};

/** pci_devs_are_dma_aliases(). */
export const devsAreDmaAliases = (topo: Topology, a: TopoDevice, b: TopoDevice, aliases: Map<Bdf, AliasInfo>): boolean =>
  (aliases.get(a.bdf)?.mask.has(b.devfn) ?? false) ||
  (aliases.get(b.bdf)?.mask.has(a.devfn) ?? false) ||
  realDmaDev(topo, a) === b ||
  realDmaDev(topo, b) === a;
