import type { FixtureDeviceSpec, FixtureSpec } from '../capture/fixture-writer.js';
import { buildConfig, type ConfigOptions } from './config-builder.js';

// Synthetic hosts shaped like real servers: per PCI domain a root bus with a host bridge, an
// IOMMU-like RCiEP, a multifunction PCH-style slot, and root ports (with ACS). Below the root ports,
// in turn: PCIe switches (upstream port + downstream ports) with GPUs (VGA + HDMI audio, one
// multifunction slot), SR-IOV NICs (PF with ARI and enabled VFs on the same bus), and NVMe drives.
// Every function carries real config space (PCIe capability, AER, ACS on ports), a driver and a
// kernel group, so the scan does the same work as on a live host.

const bdf = (domain: number, bus: number, dev: number, fn: number): string =>
  `${domain.toString(16).padStart(4, '0')}:${bus.toString(16).padStart(2, '0')}:${dev.toString(16).padStart(2, '0')}.${fn}`;

const PORT_ACS = { cap: 0x5f, ctrl: 0x1d };

export const generateHost = (target: number): FixtureSpec => {
  const devices: FixtureDeviceSpec[] = [];
  let group = 0;
  const add = (spec: Omit<FixtureDeviceSpec, 'config'> & { cfg: ConfigOptions }, sameGroupAs?: FixtureDeviceSpec): FixtureDeviceSpec | null => {
    if (devices.length >= target) return null;
    const { cfg, ...rest } = spec;
    const d: FixtureDeviceSpec = { ...rest, config: buildConfig(cfg), group: sameGroupAs?.group ?? String(group++), iommu: 'dmar0', numaNode: 0 };
    devices.push(d);
    return d;
  };
  const full = (): boolean => devices.length >= target;

  for (let domain = 0; !full(); domain++) {
    let nextBus = 1;
    // Root bus furniture.
    add({ bdf: bdf(domain, 0, 0, 0), cfg: { vendor: 0x8086, device: 0x2020, classCode: 0x060000, pcieType: 9 } });
    add({ bdf: bdf(domain, 0, 0x1d, 0), cfg: { vendor: 0x8086, device: 0x2034, classCode: 0x088000, pcieType: 9 } });
    const pch = add({ bdf: bdf(domain, 0, 0x1f, 0), driver: 'lpc_ich', cfg: { vendor: 0x8086, device: 0xa1c8, classCode: 0x060100, multifunction: true } });
    if (pch) {
      add({ bdf: bdf(domain, 0, 0x1f, 2), cfg: { vendor: 0x8086, device: 0xa1a1, classCode: 0x058000, multifunction: true } }, pch);
      add({ bdf: bdf(domain, 0, 0x1f, 3), driver: 'snd_hda_intel', cfg: { vendor: 0x8086, device: 0xa1f0, classCode: 0x040300, multifunction: true } }, pch);
      add({ bdf: bdf(domain, 0, 0x1f, 4), driver: 'i801_smbus', cfg: { vendor: 0x8086, device: 0xa1a3, classCode: 0x0c0500, multifunction: true } }, pch);
    }
    // Root ports 00:01.0 .. 00:1c.0, until the domain runs out of bus numbers.
    for (let slot = 1; slot < 0x1c && !full() && nextBus < 0xf0; slot++) {
      const kind = slot % 4; // 0,1: switch  2: NIC  3: NVMe
      const rpBus = nextBus++;
      const rpBdf = bdf(domain, 0, slot, 0);
      const rpCfg = (sub: number): ConfigOptions => ({
        vendor: 0x8086,
        device: 0x2030,
        classCode: 0x060400,
        bridge: true,
        primary: 0,
        secondary: rpBus,
        subordinate: sub,
        pcieType: 4,
        acs: PORT_ACS,
      });
      if (kind === 2) {
        if (!add({ bdf: rpBdf, driver: 'pcieport', cfg: rpCfg(rpBus) })) break;
        // SR-IOV NIC: PF 0 with ARI and 16 VFs at routing ID +0x10, stride 1 (devices 02.0-03.7).
        const pf = add({
          bdf: bdf(domain, rpBus, 0, 0),
          parent: rpBdf,
          driver: 'ixgbe',
          cfg: {
            vendor: 0x8086,
            device: 0x10fb,
            classCode: 0x020000,
            pcieType: 0,
            ari: { nextFunction: 0 },
            sriov: { total: 63, num: 16, offset: 0x10, stride: 1, vfDevice: 0x10ed },
          },
        });
        for (let i = 0; pf && i < 16; i++) {
          const rid = 0x10 + i;
          add({
            bdf: bdf(domain, rpBus, rid >> 3, rid & 7),
            parent: rpBdf,
            physfn: pf.bdf,
            driver: 'ixgbevf',
            cfg: { vendor: 0x8086, device: 0x10ed, classCode: 0x020000, pcieType: 0, ari: { nextFunction: 0 } },
          });
        }
      } else if (kind === 3) {
        if (!add({ bdf: rpBdf, driver: 'pcieport', cfg: rpCfg(rpBus) })) break;
        add({ bdf: bdf(domain, rpBus, 0, 0), parent: rpBdf, driver: 'nvme', cfg: { vendor: 0x144d, device: 0xa808, classCode: 0x010802, pcieType: 0 } });
      } else {
        // Switch: upstream port on rpBus, 8 downstream ports on the internal bus, a GPU under each.
        const internal = nextBus++;
        const dps = 8;
        const first = nextBus;
        nextBus += dps;
        if (!add({ bdf: rpBdf, driver: 'pcieport', cfg: rpCfg(nextBus - 1) })) break;
        const up = bdf(domain, rpBus, 0, 0);
        if (
          !add({
            bdf: up,
            parent: rpBdf,
            driver: 'pcieport',
            cfg: {
              vendor: 0x10b5,
              device: 0x8747,
              classCode: 0x060400,
              bridge: true,
              primary: rpBus,
              secondary: internal,
              subordinate: nextBus - 1,
              pcieType: 5,
            },
          })
        )
          break;
        for (let p = 0; p < dps && !full(); p++) {
          const dp = bdf(domain, internal, p, 0);
          const gpuBus = first + p;
          add({
            bdf: dp,
            parent: up,
            driver: 'pcieport',
            cfg: {
              vendor: 0x10b5,
              device: 0x8747,
              classCode: 0x060400,
              bridge: true,
              primary: internal,
              secondary: gpuBus,
              subordinate: gpuBus,
              pcieType: 6,
              acs: PORT_ACS,
            },
          });
          const gpu = add({
            bdf: bdf(domain, gpuBus, 0, 0),
            parent: dp,
            driver: 'nvidia',
            cfg: { vendor: 0x10de, device: 0x2204, classCode: 0x030000, pcieType: 0, multifunction: true },
          });
          if (gpu)
            add(
              {
                bdf: bdf(domain, gpuBus, 0, 1),
                parent: dp,
                driver: 'snd_hda_intel',
                cfg: { vendor: 0x10de, device: 0x1aef, classCode: 0x040300, pcieType: 0, multifunction: true },
              },
              gpu,
            );
        }
      }
    }
  }
  return { devices, iommuUnits: ['dmar0'] };
};
