import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { scan } from '../../api/read.js';
import { oracleCaptures } from '../helpers/paths.js';

const PCIE_TYPE: Record<string, string> = {
  root_port: 'root-port',
  upstream_port: 'upstream-port',
  downstream_port: 'downstream-port',
  endpoint: 'endpoint',
  rc_integrated_endpoint: 'rciep',
  pcie_to_pci_bridge: 'pcie-to-pci-bridge',
};

// Every capture the real kernel produced loads with the device count, ids, drivers and groups the
// capture's own groups.json recorded (written by the capture script inside the guest, not by us).
describe.each(oracleCaptures())('capture $name', ({ tarball, groupsJson }) => {
  const expected = JSON.parse(fs.readFileSync(groupsJson, 'utf8')) as {
    device_count: number;
    group_count: number;
    devices: Record<
      string,
      {
        vendor: string;
        device: string;
        class: string;
        driver: string | null;
        group: number | null;
        parent: string | null;
        pcie_type: string | null;
        multifunction_bit: boolean;
        has_acs_cap: boolean;
        has_sriov_cap: boolean;
        subsystem_vendor: string;
        revision: string;
        config_len: number;
      }
    >;
  };
  const snap = scan({ root: tarball, pciIds: null });

  it('has every device and nothing else', () => {
    expect(snap.devices.size).toBe(expected.device_count);
    expect([...snap.devices.keys()].sort()).toEqual(Object.keys(expected.devices).sort());
    expect(snap.kernelGroups.size).toBe(expected.group_count);
    expect(snap.problems).toEqual([]);
  });

  it('reads ids, drivers, groups and topology as the kernel reported them', () => {
    for (const [bdf, e] of Object.entries(expected.devices)) {
      const d = snap.devices.get(bdf as never)!;
      expect({
        bdf,
        vendor: d.vendor,
        device: d.device,
        class: d.class,
        driver: d.driver,
        group: d.kernelGroup,
        parent: d.parent,
        sv: d.subsystemVendor,
        rev: d.revision,
        cfg: d.configSize,
      }).toEqual({
        bdf,
        vendor: e.vendor,
        device: e.device,
        class: e.class,
        driver: e.driver,
        group: e.group === null ? null : String(e.group),
        parent: e.parent,
        sv: e.subsystem_vendor,
        rev: e.revision,
        cfg: e.config_len,
      });
    }
  });

  it('parses port type, multifunction, ACS and SR-IOV from config space', () => {
    for (const [bdf, e] of Object.entries(expected.devices)) {
      const d = snap.devices.get(bdf as never)!;
      const type = e.pcie_type === null ? 'conventional' : PCIE_TYPE[e.pcie_type];
      expect({ bdf, type: d.portType, mf: d.multifunction, acs: d.acs !== null, sriov: d.sriov !== null }).toEqual({
        bdf,
        type,
        mf: e.multifunction_bit,
        acs: e.has_acs_cap,
        sriov: e.has_sriov_cap,
      });
    }
  });
});
