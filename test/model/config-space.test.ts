import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../bench/config-builder.js';
import { ACS_BITS, parseConfigSpace, putU32 } from '../../model/config-space.js';

const put32 = putU32;
const codes = (bytes: Uint8Array): string[] => parseConfigSpace(bytes).problems.map((p) => p.code);

describe('header', () => {
  it('reads ids, class, revision and subsystem from a type 0 header', () => {
    const cs = parseConfigSpace(buildConfig({ vendor: 0x8086, device: 0x1533, classCode: 0x020000, revision: 3, subsystem: [0x15d9, 0x1533] }));
    expect(cs).toMatchObject({
      vendorId: 0x8086,
      deviceId: 0x1533,
      classCode: 0x020000,
      revision: 3,
      layout: 'normal',
      multifunction: false,
      subsystemVendorId: 0x15d9,
      subsystemDeviceId: 0x1533,
    });
    expect(cs.secondaryBus).toBeNull();
  });

  it('reads the bridge bus numbers and the multifunction bit (header type bit 7)', () => {
    const cs = parseConfigSpace(
      buildConfig({
        vendor: 0x1022,
        device: 0x1483,
        classCode: 0x060400,
        bridge: true,
        multifunction: true,
        primary: 0,
        secondary: 3,
        subordinate: 7,
        pcieType: 4,
      }),
    );
    expect(cs).toMatchObject({ layout: 'bridge', multifunction: true, primaryBus: 0, secondaryBus: 3, subordinateBus: 7, portType: 'root-port' });
    expect(cs.subsystemVendorId).toBeNull();
  });

  it('reports a header type that is neither normal, bridge nor CardBus', () => {
    const b = buildConfig({ vendor: 0x10de, device: 0x2204, classCode: 0x030000 });
    b[0x0e] = 0x05;
    expect(codes(b)).toContain('bad-header');
    expect(parseConfigSpace(b).layout).toBe('unknown');
  });
});

describe('capability lists', () => {
  it('walks the standard list from 0x34 and the extended list from 0x100', () => {
    const cs = parseConfigSpace(
      buildConfig({
        vendor: 0x8086,
        device: 0x10fb,
        classCode: 0x020000,
        pcieType: 0,
        acs: { cap: 0x5f, ctrl: 0x1d },
        ari: { nextFunction: 1 },
        sriov: { total: 64, num: 4, offset: 0x80, stride: 2, vfDevice: 0x10ed },
      }),
    );
    expect(cs.capabilities.map((c) => [c.id, c.offset])).toEqual([
      [0x10, 0x40],
      [0x01, 0x80],
      [0x05, 0x90],
    ]);
    expect(cs.extCapabilities.map((c) => c.id)).toEqual([0x01, 0x0d, 0x0e, 0x10]);
    expect(cs.acs).toMatchObject({ cap: 0x5f, ctrl: 0x1d, capBits: ['SV', 'TB', 'RR', 'CR', 'UF', 'DT'], ctrlBits: ['SV', 'RR', 'CR', 'UF'] });
    expect(cs.ari).toEqual({ offset: 0x150, nextFunction: 1 });
    expect(cs.sriov).toMatchObject({ totalVfs: 64, numVfs: 4, firstVfOffset: 0x80, vfStride: 2, vfDeviceId: '0x10ed', vfEnabled: true });
    expect(cs.problems).toEqual([]);
  });

  it('decodes the PCIe port type from bits 7:4 of the flags at cap+2', () => {
    const types: [number, string][] = [
      [0, 'endpoint'],
      [1, 'legacy-endpoint'],
      [4, 'root-port'],
      [5, 'upstream-port'],
      [6, 'downstream-port'],
      [7, 'pcie-to-pci-bridge'],
      [9, 'rciep'],
      [0xa, 'rc-event-collector'],
      [0xf, 'unknown'],
    ];
    for (const [code, name] of types) {
      expect(parseConfigSpace(buildConfig({ vendor: 1, device: 2, classCode: 0x060400, bridge: true, pcieType: code })).portType).toBe(name);
    }
  });

  it('calls a device without a PCIe capability conventional, with no extended list read', () => {
    const b = buildConfig({ vendor: 0x8086, device: 0x7000, classCode: 0x060100, size: 4096 });
    put32(b, 0x100, 0x0001000d); // an ACS header that only a PCIe device may have
    const cs = parseConfigSpace(b);
    expect(cs.portType).toBe('conventional');
    expect(cs.acs).toBeNull();
  });

  it('keeps ACS unknown when the read stopped at 256 bytes', () => {
    const cs = parseConfigSpace(
      buildConfig({ vendor: 1, device: 2, classCode: 0x060400, bridge: true, pcieType: 4, acs: { cap: 0x1f, ctrl: 0x1f }, size: 256 }),
    );
    expect(cs.extendedReadable).toBe(false);
    expect(cs.acs).toBeNull();
    expect(cs.problems.map((p) => p.code)).toEqual(['short-config']);
  });
});

describe('hostile config space', () => {
  it('reports a truncated 64-byte read: capabilities, port type and ACS unknown', () => {
    const cs = parseConfigSpace(
      buildConfig({ vendor: 0x8086, device: 0x1901, classCode: 0x060400, bridge: true, pcieType: 4, acs: { cap: 0x1f, ctrl: 0x1f }, size: 64 }),
    );
    expect(cs.vendorId).toBe(0x8086);
    expect(cs.secondaryBus).toBe(0);
    expect(cs.capabilities).toEqual([]);
    expect(cs.portType).toBe('unknown');
    expect(cs.acs).toBeNull();
    expect(cs.problems.map((p) => p.code)).toContain('short-config');
  });

  it('reports a config shorter than the header without reading past it', () => {
    for (const n of [0, 1, 13, 40]) {
      const cs = parseConfigSpace(new Uint8Array(n).fill(0xab));
      expect(cs.size).toBe(n);
      expect(cs.capabilities).toEqual([]);
      expect(cs.problems.map((p) => p.code)).toContain('short-config');
    }
  });

  it('stops a standard capability list that loops back on itself', () => {
    const b = buildConfig({ vendor: 1, device: 2, classCode: 0x020000 });
    b[0x91] = 0x80; // MSI -> back to PM
    const cs = parseConfigSpace(b);
    expect(cs.capabilities.map((c) => c.offset)).toEqual([0x80, 0x90]);
    expect(cs.problems.map((p) => p.code)).toEqual(['cap-loop']);
  });

  it('stops a capability that points to itself', () => {
    const b = buildConfig({ vendor: 1, device: 2, classCode: 0x020000 });
    b[0x81] = 0x80;
    expect(codes(b)).toEqual(['cap-loop']);
  });

  it('reports a capability pointer outside the bytes read', () => {
    const b = buildConfig({ vendor: 1, device: 2, classCode: 0x020000, size: 128 });
    b[0x34] = 0xfc; // beyond the 128 bytes
    const cs = parseConfigSpace(b);
    expect(cs.capabilities).toEqual([]);
    expect(cs.problems.map((p) => p.code)).toContain('cap-out-of-range');
  });

  it('ignores a capability pointer into the header (below 0x40), as the kernel does', () => {
    const b = buildConfig({ vendor: 1, device: 2, classCode: 0x020000 });
    b[0x34] = 0x10;
    const cs = parseConfigSpace(b);
    expect(cs.capabilities).toEqual([]);
    expect(cs.problems).toEqual([]);
  });

  it('stops an extended list that loops', () => {
    const b = buildConfig({ vendor: 1, device: 2, classCode: 0x060400, bridge: true, pcieType: 6, acs: { cap: 0x1f, ctrl: 0x1f } });
    put32(b, 0x140, 0x0001000d | (0x100 << 20)); // ACS -> back to AER
    const cs = parseConfigSpace(b);
    expect(cs.extCapabilities.map((c) => c.offset)).toEqual([0x100, 0x140]);
    expect(cs.problems.map((p) => p.code)).toEqual(['ext-cap-loop']);
    expect(cs.acs?.ctrl).toBe(0x1f);
  });

  it('reports an extended pointer past the end of the buffer', () => {
    const b = buildConfig({ vendor: 1, device: 2, classCode: 0x060400, bridge: true, pcieType: 6, size: 4096 }).slice(0, 0x200);
    put32(b, 0x100, 0x00010001 | (0xff0 << 20));
    const cs = parseConfigSpace(b);
    expect(cs.extCapabilities.map((c) => c.id)).toEqual([0x01]);
    expect(cs.problems.map((p) => p.code)).toEqual(['ext-cap-out-of-range']);
  });

  it('treats an all-ones extended header (a device that does not decode it) as no list', () => {
    const b = buildConfig({ vendor: 1, device: 2, classCode: 0x020000, pcieType: 0 });
    put32(b, 0x100, 0xffffffff);
    const cs = parseConfigSpace(b);
    expect(cs.extCapabilities).toEqual([]);
    expect(cs.acs).toBeNull();
    expect(cs.problems).toEqual([]);
  });

  it('survives random bytes without throwing and never reports offsets outside the buffer', () => {
    let seed = 12345;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    for (let i = 0; i < 300; i++) {
      const size = [64, 256, 4096, 100][i % 4]!;
      const b = Uint8Array.from({ length: size }, rnd);
      b[0x06] = b[0x06]! | 0x10;
      const cs = parseConfigSpace(b);
      for (const c of [...cs.capabilities, ...cs.extCapabilities]) expect(c.offset).toBeLessThan(size);
      expect(cs.capabilities.length).toBeLessThanOrEqual(48);
    }
  });

  it('names ACS bits as the kernel defines them (SV TB RR CR UF EC DT)', () => {
    expect(ACS_BITS).toEqual({ SV: 1, TB: 2, RR: 4, CR: 8, UF: 0x10, EC: 0x20, DT: 0x40 });
  });
});

describe('reset capabilities', () => {
  const reset = (o: Partial<Parameters<typeof buildConfig>[0]>) =>
    parseConfigSpace(buildConfig({ vendor: 0x1b36, device: 1, classCode: 0x020000, ...o })).reset;

  it('reads the FLR bit of the PCIe Device Capabilities', () => {
    expect(reset({ pcieType: 0, flr: true })?.flr).toBe(true);
    expect(reset({ pcieType: 0, flr: false })?.flr).toBe(false);
    expect(reset({})?.flr).toBe(false); // conventional: no PCIe capability
  });

  it('reads the Advanced Features capability: FLR counts only with TP', () => {
    expect(reset({ af: { tp: true, flr: true } })?.afFlr).toBe(true);
    expect(reset({ af: { tp: false, flr: true } })?.afFlr).toBe(false);
    expect(reset({ af: { tp: true, flr: false } })?.afFlr).toBe(false);
    expect(reset({})?.afFlr).toBe(false);
  });

  it("reads PMCSR's No_Soft_Reset, and ignores a PM capability of a version the kernel does not know", () => {
    expect(reset({ pm: {} })?.pm).toBe('soft-reset');
    expect(reset({ pm: { noSoftReset: true } })?.pm).toBe('no-soft-reset');
    expect(reset({ pm: { version: 4 } })?.pm).toBeNull();
    expect(reset({ pm: false })?.pm).toBeNull();
  });

  it("reads a port's slot: hot-plug capable only when a slot is implemented", () => {
    const port = { bridge: true, classCode: 0x060400, pcieType: 4 };
    expect(reset({ ...port, slotHotplug: true })?.hotplugSlot).toBe(true);
    expect(reset({ ...port, slotHotplug: false })?.hotplugSlot).toBe(false);
    const upstream = buildConfig({ vendor: 0x1b36, device: 1, classCode: 0x060400, bridge: true, pcieType: 5 });
    putU32(upstream, 0x54, 0x40); // slot capabilities without the "slot implemented" flag: ignored
    expect(parseConfigSpace(upstream).reset?.hotplugSlot).toBe(false);
  });

  it("finds a CXL port's DVSEC and its Unmask SBR bit", () => {
    const port = { bridge: true, classCode: 0x060400, pcieType: 4 };
    expect(reset({ ...port, cxlPort: { sbrUnmasked: true } })?.cxlPort).toEqual({ sbrUnmasked: true });
    expect(reset({ ...port, cxlPort: { sbrUnmasked: false } })?.cxlPort).toEqual({ sbrUnmasked: false });
    expect(reset(port)?.cxlPort).toBeNull();
    const otherVendor = buildConfig({ vendor: 0x1b36, device: 1, classCode: 0x060400, bridge: true, pcieType: 4, cxlPort: { sbrUnmasked: true } });
    const dvsec = parseConfigSpace(otherVendor).extCapabilities.find((c) => c.id === 0x23)!;
    putU32(otherVendor, dvsec.offset + 4, 0x1234 | (1 << 16) | (0x28 << 20));
    expect(parseConfigSpace(otherVendor).reset?.cxlPort).toBeNull();
  });

  it('tells an assigned BAR 0 (32- or 64-bit memory, I/O) from an empty one', () => {
    expect(reset({ bar0: 0xfe000000 })?.bar0).toBe(true);
    expect(reset({ bar0: 0 })?.bar0).toBe(false);
    expect(reset({ bar0: 0xe001 })?.bar0).toBe(true);
    const high = buildConfig({ vendor: 0x1b36, device: 1, classCode: 0x020000, bar0: 0x4 }); // 64-bit, low half 0
    putU32(high, 0x14, 0x40);
    expect(parseConfigSpace(high).reset?.bar0).toBe(true);
  });

  it('knows nothing from a 64-byte read', () => {
    expect(reset({ pcieType: 0, size: 64 })).toBeNull();
  });
});
