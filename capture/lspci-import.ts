import * as fs from 'node:fs';
import * as path from 'node:path';
import { IsogroupError } from '../errors.js';
import { type Bdf, compareBdf, formatBdf, splitBdf } from '../model/bdf.js';
import { ACS_BITS, PCI_CFG_SPACE_EXP_SIZE, PCI_CFG_SPACE_SIZE, parseConfigSpace, putU16, putU32 } from '../model/config-space.js';
import { type FixtureDeviceSpec, type FixtureSpec, writeFixtureRoot } from './fixture-writer.js';

// Turn lspci text (`lspci -nnDvvvxxxx`, `-xxx`, or the pciutils `-xxxx` test dumps) into a fixture root.
// Config space comes from the hex dump byte for byte; where the dump stops at 256 bytes the extended
// capabilities lspci decoded (it reads the whole config file even when printing 256 bytes) are written
// back at their printed offsets, so the scanner sees ACS/ARI/SR-IOV exactly as lspci saw them.

export interface ImportProblem {
  code: string;
  line?: number;
  bdf?: string;
  message: string;
}

interface DecodedExtCap {
  offset: number;
  version: number;
  name: string;
  line: number;
  /** Field values decoded from the indented lines under the capability, keyed by register name. */
  fields: Map<string, string>;
}

export interface LspciDevice {
  bdf: Bdf;
  /** 1-based line of the device's header line. */
  line: number;
  description: string;
  config: Uint8Array;
  driver: string | null;
  group: string | null;
  numaNode: number | null;
  extCaps: DecodedExtCap[];
}

const HEADER_RE = /^(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])\s+(.*)$/;
const HEX_RE = /^([0-9a-fA-F]{2,3}):((?: [0-9a-fA-F]{2})+)\s*$/;
const EXT_CAP_RE = /^\tCapabilities: \[([0-9a-fA-F]{3}) v(\d+)\] (.*)$/;
// A driver name becomes a directory name in the fixture: nothing that could climb or hide.
const DRIVER_RE = /^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$/;

const invalid = (file: string, line: number, what: string): IsogroupError => new IsogroupError('E_INVALID_INPUT', `${file}:${line}: ${what}`, { file, line });

/** Parse lspci output into devices; malformed input throws E_INVALID_INPUT naming the file and line. */
export const parseLspci = (text: string, file = 'lspci output'): LspciDevice[] => {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  const devices: LspciDevice[] = [];
  const seen = new Set<string>();
  let cur: (LspciDevice & { bytes: number[]; hexDone: boolean }) | null = null;
  let lastCap: DecodedExtCap | null = null;
  const finish = (): void => {
    if (!cur) return;
    if (cur.bytes.length === 0) throw invalid(file, cur.line, `device ${cur.bdf} has no hex dump (run lspci with -xxx or -xxxx)`);
    const { bytes, hexDone: _h, ...rest } = cur;
    devices.push({ ...rest, config: Uint8Array.from(bytes) });
    cur = null;
    lastCap = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const line = lines[i]!;
    if (line.trim() === '') {
      if (cur && cur.bytes.length > 0) cur.hexDone = true;
      continue;
    }
    if (line.startsWith('#')) continue;
    const hexRow = HEX_RE.exec(line);
    if (hexRow) {
      if (!cur) throw invalid(file, n, 'hex dump row before any device header line');
      if (cur.hexDone) throw invalid(file, n, `second hex dump for ${cur.bdf}`);
      const offset = parseInt(hexRow[1]!, 16);
      if (offset !== cur.bytes.length) {
        throw invalid(
          file,
          n,
          `hex row at offset 0x${offset.toString(16)} for ${cur.bdf}, expected 0x${cur.bytes.length.toString(16)} (rows must be contiguous from 00)`,
        );
      }
      const values = hexRow[2]!.trim().split(' ');
      if (values.length !== 16) throw invalid(file, n, `hex row has ${values.length} bytes, expected 16`);
      if (offset + 16 > PCI_CFG_SPACE_EXP_SIZE) throw invalid(file, n, `hex dump of ${cur.bdf} runs past 4096 bytes`);
      for (const v of values) cur.bytes.push(parseInt(v, 16));
      continue;
    }
    if (line.startsWith('\t')) {
      if (!cur) throw invalid(file, n, 'indented line before any device header line');
      const t = line.trim();
      let m: RegExpExecArray | null;
      if ((m = /^Kernel driver in use: (.*)$/.exec(t))) {
        const driver = m[1]!.trim();
        if (!DRIVER_RE.test(driver)) throw invalid(file, n, `driver name ${JSON.stringify(driver)} is not a plain driver name`);
        cur.driver = driver;
      } else if ((m = /^IOMMU group: (.*)$/.exec(t))) {
        if (!/^\d{1,9}$/.test(m[1]!.trim())) throw invalid(file, n, `IOMMU group ${JSON.stringify(m[1])} is not a number`);
        cur.group = String(parseInt(m[1]!, 10));
      } else if ((m = /^NUMA node: (-?\d+)$/.exec(t))) {
        cur.numaNode = parseInt(m[1]!, 10);
      } else if ((m = EXT_CAP_RE.exec(line))) {
        const offset = parseInt(m[1]!, 16);
        if (offset < PCI_CFG_SPACE_SIZE) {
          lastCap = null; // a standard capability printed with a version: not extended
          continue;
        }
        if (offset % 4 !== 0) throw invalid(file, n, `extended capability offset 0x${m[1]} of ${cur.bdf} is not dword aligned`);
        if (cur.extCaps.some((c) => c.offset === offset)) throw invalid(file, n, `extended capability offset 0x${m[1]} of ${cur.bdf} appears twice`);
        lastCap = { offset, version: parseInt(m[2]!, 10) & 0xf, name: m[3]!.trim(), line: n, fields: new Map() };
        cur.extCaps.push(lastCap);
      } else if (/^\tCapabilities: /.test(line)) {
        lastCap = null;
      } else if (lastCap && line.startsWith('\t\t')) {
        const f = /^([A-Za-z][A-Za-z ]*?):\s*(.*)$/.exec(t);
        if (f) lastCap.fields.set(f[1]!, f[2]!);
        // SR-IOV puts several "Key: value," pairs on one line.
        for (const kv of t.matchAll(/([A-Za-z][A-Za-z ]*?): ([0-9a-fA-F]+)(?:,|$)/g)) lastCap.fields.set(kv[1]!.trim(), kv[2]!);
      } else if (!line.startsWith('\t\t')) {
        lastCap = null;
      }
      continue;
    }
    const header = HEADER_RE.exec(line);
    if (!header) throw invalid(file, n, `${JSON.stringify(line.slice(0, 60))} is neither a device header (DDDD:BB:DD.F ...) nor a hex dump row`);
    finish();
    const device = parseInt(header[3]!, 16);
    if (device >= 0x20) throw invalid(file, n, `device number ${header[3]} is above 1f`);
    const bdf = formatBdf({ domain: header[1] ? parseInt(header[1], 16) : 0, bus: parseInt(header[2]!, 16), device, fn: parseInt(header[4]!, 10) });
    if (seen.has(bdf)) throw invalid(file, n, `device ${bdf} appears twice`);
    seen.add(bdf);
    cur = {
      bdf,
      line: n,
      description: header[5]!,
      config: new Uint8Array(0),
      driver: null,
      group: null,
      numaNode: null,
      extCaps: [],
      bytes: [],
      hexDone: false,
    };
  }
  finish();
  if (devices.length === 0) throw invalid(file, lines.length, 'no PCI devices found (expected `lspci -nnDvvvxxxx` output)');
  return devices;
};

// Extended capability IDs by the names lspci prints (pciutils ls-ecaps.c; checked against the
// 4 KiB dumps in realdata, where name and header bytes can be compared).
const EXT_CAP_IDS: [string, number][] = [
  ['Null', 0x00],
  ['Advanced Error Reporting', 0x01],
  ['Virtual Channel', 0x02],
  ['Device Serial Number', 0x03],
  ['Power Budgeting', 0x04],
  ['Root Complex Link', 0x05],
  ['Root Complex Internal Link Control', 0x06],
  ['Root Complex Event Collector', 0x07],
  ['Multi-Function Virtual Channel', 0x08],
  ['Root Complex Register Block', 0x0a],
  ['Vendor Specific Information', 0x0b],
  ['Config Access', 0x0c],
  ['Access Control Services', 0x0d],
  ['Alternative Routing-ID Interpretation', 0x0e],
  ['Address Translation Service', 0x0f],
  ['Single Root I/O Virtualization', 0x10],
  ['Multi-Root I/O Virtualization', 0x11],
  ['Multicast', 0x12],
  ['Page Request Interface', 0x13],
  ['Physical Resizable BAR', 0x15],
  ['Dynamic Power Allocation', 0x16],
  ['Transaction Processing Hints', 0x17],
  ['Latency Tolerance Reporting', 0x18],
  ['Secondary PCI Express', 0x19],
  ['Protocol Multiplexing', 0x1a],
  ['Process Address Space ID', 0x1b],
  ['LN Requester', 0x1c],
  ['Downstream Port Containment', 0x1d],
  ['L1 PM Substates', 0x1e],
  ['Precision Time Measurement', 0x1f],
  ['PCI Express over M_PHY', 0x20],
  ['FRS Queueing', 0x21],
  ['Readiness Time Reporting', 0x22],
  ['Designated Vendor-Specific', 0x23],
  ['Virtual Resizable BAR', 0x24],
  ['Data Link Feature', 0x25],
  ['Physical Layer 16.0 GT/s', 0x26],
  ['Lane Margining at the Receiver', 0x27],
  ['Hierarchy ID', 0x28],
  ['Native PCIe Enclosure Management', 0x29],
  ['Physical Layer 32.0 GT/s', 0x2a],
  ['Alternate Protocol', 0x2b],
  ['System Firmware Intermediary', 0x2c],
  ['Data Object Exchange', 0x2e],
  ['Device 3', 0x2f],
  ['Integrity & Data Encryption', 0x30],
  ['Physical Layer 64.0 GT/s', 0x31],
];

export const extCapIdForName = (name: string): number | null => {
  const generic = /^Extended Capability ID 0x([0-9a-fA-F]{1,4})/.exec(name);
  if (generic) return parseInt(generic[1]!, 16);
  let best: [string, number] | null = null;
  for (const entry of EXT_CAP_IDS) {
    if ((name === entry[0] || name.startsWith(`${entry[0]} `) || name.startsWith(`${entry[0]}:`)) && (!best || entry[0].length > best[0].length)) best = entry;
  }
  return best ? best[1] : null;
};

// "SrcValid+ TransBlk- ..." -> the flags marked '+'.
const plusFlags = (text: string | undefined): Set<string> => new Set([...(text ?? '').matchAll(/([A-Za-z0-9]+)\+/g)].map((m) => m[1]!));

const ACS_WORDS: [string, number][] = [
  ['SrcValid', ACS_BITS.SV],
  ['TransBlk', ACS_BITS.TB],
  ['ReqRedir', ACS_BITS.RR],
  ['CmpltRedir', ACS_BITS.CR],
  ['UpstreamFwd', ACS_BITS.UF],
  ['EgressCtrl', ACS_BITS.EC],
  ['DirectTrans', ACS_BITS.DT],
];

export const acsBitsFromText = (text: string | undefined): number => {
  const on = plusFlags(text);
  return ACS_WORDS.reduce((v, [word, bit]) => (on.has(word) ? v | bit : v), 0);
};

const put16 = putU16;
const put32 = putU32;
const num = (fields: Map<string, string>, key: string, radix = 10): number | null => {
  const v = fields.get(key);
  if (v === undefined) return null;
  const n = parseInt(v, radix);
  return Number.isFinite(n) ? n : null;
};

export interface Synthesis {
  config: Uint8Array;
  written: { offset: number; id: number; name: string }[];
  /** Capabilities whose name has no known ID: written as ID 0 so the chain stays whole. */
  skipped: { offset: number; name: string }[];
}

/** Rebuild the extended config space (0x100-0xfff) from the capabilities lspci decoded. */
export const synthesizeExtended = (base: Uint8Array, caps: DecodedExtCap[]): Synthesis => {
  const out = new Uint8Array(PCI_CFG_SPACE_EXP_SIZE);
  out.set(base.subarray(0, PCI_CFG_SPACE_SIZE));
  // A name we cannot map still keeps its place in the chain (as ID 0, "Null"): the list must start
  // at 0x100 and reach every later capability, in the walk order lspci printed.
  const known = caps.map((c) => ({ cap: c, id: extCapIdForName(c.name) ?? 0 }));
  const skipped = caps.filter((c) => extCapIdForName(c.name) === null).map((c) => ({ offset: c.offset, name: c.name }));
  known.forEach(({ cap, id }, i) => {
    const next = known[i + 1]?.cap.offset ?? 0;
    put32(out, cap.offset, (id & 0xffff) | ((cap.version & 0xf) << 16) | ((next & 0xffc) << 20));
    const f = cap.fields;
    const o = cap.offset;
    if (id === 0x0d) {
      put16(out, o + 4, acsBitsFromText(f.get('ACSCap')));
      put16(out, o + 6, acsBitsFromText(f.get('ACSCtl')));
    } else if (id === 0x0e) {
      const capFlags = plusFlags(f.get('ARICap'));
      const ctlFlags = plusFlags(f.get('ARICtl'));
      const nextFn = /Next Function: (\d+)/.exec(f.get('ARICap') ?? '');
      const group = /Function Group: (\d+)/.exec(f.get('ARICtl') ?? '');
      put16(out, o + 4, (capFlags.has('MFVC') ? 1 : 0) | (capFlags.has('ACS') ? 2 : 0) | ((nextFn ? parseInt(nextFn[1]!, 10) & 0xff : 0) << 8));
      put16(out, o + 6, (ctlFlags.has('MFVC') ? 1 : 0) | (ctlFlags.has('ACS') ? 2 : 0) | ((group ? parseInt(group[1]!, 10) & 0x7 : 0) << 4));
    } else if (id === 0x10) {
      const ctl = plusFlags(f.get('IOVCtl'));
      put16(
        out,
        o + 0x08,
        (ctl.has('Enable') ? 1 : 0) |
          (ctl.has('Migration') ? 2 : 0) |
          (ctl.has('Interrupt') ? 4 : 0) |
          (ctl.has('MSE') ? 8 : 0) |
          (ctl.has('ARIHierarchy') ? 0x10 : 0),
      );
      put16(out, o + 0x0c, num(f, 'Initial VFs') ?? 0);
      put16(out, o + 0x0e, num(f, 'Total VFs') ?? 0);
      put16(out, o + 0x10, num(f, 'Number of VFs') ?? 0);
      out[o + 0x12] = (num(f, 'Function Dependency Link', 16) ?? 0) & 0xff;
      put16(out, o + 0x14, num(f, 'VF offset') ?? 0);
      put16(out, o + 0x16, num(f, 'stride') ?? 0);
      put16(out, o + 0x1a, num(f, 'Device ID', 16) ?? 0);
      put32(out, o + 0x1c, num(f, 'Supported Page Size', 16) ?? 0);
      put32(out, o + 0x20, num(f, 'System Page Size', 16) ?? 0);
    }
  });
  return { config: out, written: known.map(({ cap, id }) => ({ offset: cap.offset, id, name: cap.name })), skipped };
};

// Intel VMD endpoints (drivers/pci/controller/vmd.c device table); each hosts one PCI domain >= 0x10000.
const VMD_IDS = new Set([0x201d, 0x28c0, 0x467f, 0x4c3d, 0x7d0b, 0x9a0b, 0xa77f, 0xad0b, 0xb60b, 0xb06f, 0xc07f]);

export interface ImportResult {
  root: string;
  source: string;
  devices: {
    bdf: string;
    parent: string | null;
    rootBusUnder: string | null;
    driver: string | null;
    group: string | null;
    configSize: number;
    synthesizedExtended: boolean;
  }[];
  groups: Record<string, string[]>;
  iommuUnit: string | null;
  problems: ImportProblem[];
}

interface Plan {
  spec: FixtureSpec;
  result: Omit<ImportResult, 'root'>;
  meta: Record<string, unknown>;
}

/** Work out topology, synthesized config and groups for parsed devices (no I/O). */
export const planImport = (devices: LspciDevice[], source: string): Plan => {
  const problems: ImportProblem[] = [];
  const byBdf = new Map(devices.map((d) => [d.bdf, d]));
  const parsed = new Map(devices.map((d) => [d.bdf, parseConfigSpace(d.config)]));
  // Bridges by (domain, secondary bus). A bridge whose secondary bus is not above its own bus is
  // unconfigured or corrupt; using it could make a parent loop, so it parents nothing.
  const bridgeFor = new Map<string, Bdf>();
  for (const d of devices) {
    const cs = parsed.get(d.bdf)!;
    if (cs.secondaryBus === null || d.config.length < 0x1b) continue;
    const p = splitBdf(d.bdf)!;
    if (cs.secondaryBus <= p.bus) {
      if (cs.secondaryBus !== 0)
        problems.push({
          code: 'bridge-bus-order',
          bdf: d.bdf,
          line: d.line,
          message: `bridge ${d.bdf} has secondary bus ${cs.secondaryBus} not above its own bus ${p.bus}; it parents nothing`,
        });
      continue;
    }
    const key = `${p.domain}:${cs.secondaryBus}`;
    const other = bridgeFor.get(key);
    if (other) {
      problems.push({
        code: 'bridge-bus-conflict',
        bdf: d.bdf,
        line: d.line,
        message: `bridges ${other} and ${d.bdf} both claim secondary bus ${cs.secondaryBus.toString(16)}; kept ${other}`,
      });
      continue;
    }
    bridgeFor.set(key, d.bdf);
  }
  // VMD: the i-th VMD endpoint (in enumeration order) hosts domain 0x10000 + i (vmd_find_free_domain).
  const vmds = devices
    .filter((d) => d.driver === 'vmd' || (parsed.get(d.bdf)!.vendorId === 0x8086 && VMD_IDS.has(parsed.get(d.bdf)!.deviceId) && d.config.length >= 64))
    .map((d) => d.bdf)
    .sort(compareBdf);
  const vmdDomains = [...new Set(devices.map((d) => splitBdf(d.bdf)!.domain).filter((dom) => dom >= 0x10000))].sort((a, b) => a - b);
  const hostOf = new Map<number, Bdf>();
  if (vmdDomains.length > 0) {
    if (vmdDomains.length <= vmds.length && vmdDomains.every((dom, i) => dom === 0x10000 + i)) {
      for (const [i, dom] of vmdDomains.entries()) hostOf.set(dom, vmds[i]!);
    } else {
      problems.push({
        code: 'vmd-unmatched',
        message: `domains ${vmdDomains.map((x) => x.toString(16)).join(', ')} look like VMD domains, but the ${vmds.length} VMD endpoint(s) cannot be matched to them; they are placed as top-level root buses`,
      });
    }
  }

  const synthesized: { bdf: string; written: Synthesis['written']; skipped: Synthesis['skipped'] }[] = [];
  const specs: FixtureDeviceSpec[] = [];
  const outDevices: ImportResult['devices'] = [];
  const groups: Record<string, string[]> = {};
  for (const d of devices) {
    const p = splitBdf(d.bdf)!;
    const parent = bridgeFor.get(`${p.domain}:${p.bus}`) ?? null;
    const rootBusUnder = parent === null ? (hostOf.get(p.domain) ?? null) : null;
    let config = d.config;
    let synth = false;
    if (config.length === PCI_CFG_SPACE_SIZE && d.extCaps.length > 0) {
      const s = synthesizeExtended(config, d.extCaps);
      config = s.config;
      synth = true;
      synthesized.push({ bdf: d.bdf, written: s.written, skipped: s.skipped });
      for (const sk of s.skipped)
        problems.push({
          code: 'unknown-ext-cap',
          bdf: d.bdf,
          message: `${d.bdf}: extended capability [${sk.offset.toString(16)}] ${JSON.stringify(sk.name)} has no known ID; written as a Null (ID 0) capability to keep the list whole`,
        });
    }
    if (config.length < 64)
      problems.push({ code: 'short-config', bdf: d.bdf, line: d.line, message: `${d.bdf}: the hex dump has only ${config.length} bytes` });
    specs.push({ bdf: d.bdf, parent, rootBusUnder, config, driver: d.driver, group: d.group, ...(d.numaNode !== null ? { numaNode: d.numaNode } : {}) });
    if (d.group !== null) (groups[d.group] ??= []).push(d.bdf);
    outDevices.push({ bdf: d.bdf, parent, rootBusUnder, driver: d.driver, group: d.group, configSize: config.length, synthesizedExtended: synth });
  }

  // SR-IOV: a PF's VFs sit at routing ID PF + offset + i*stride (PCIe SR-IOV spec, 3.3.10/11).
  for (const d of devices) {
    const cs = parseConfigSpace(specs.find((s) => s.bdf === d.bdf)!.config);
    if (!cs.sriov || cs.sriov.numVfs === 0 || !cs.sriov.vfEnabled) continue;
    const p = splitBdf(d.bdf)!;
    const rid = (p.bus << 8) | (p.device << 3) | p.fn;
    for (let i = 0; i < cs.sriov.numVfs; i++) {
      const vf = rid + cs.sriov.firstVfOffset + i * cs.sriov.vfStride;
      const vfBdf = formatBdf({ domain: p.domain, bus: (vf >> 8) & 0xff, device: (vf >> 3) & 0x1f, fn: vf & 7 });
      const spec = specs.find((s) => s.bdf === vfBdf);
      if (spec && byBdf.has(vfBdf)) spec.physfn = d.bdf;
    }
  }

  // IOMMU unit: only when it can be told from the dump. One AMD IOMMU function (class 0806) means one
  // AMD-Vi unit, which the kernel names ivhd0. With several, their ivhdN order follows the IVRS table,
  // not bus order (a WRX80 dump shows 60:00.2 found first), and Intel DMAR units are not PCI devices
  // (client chips give the GPU its own unit), so no unit is invented then.
  let iommuUnit: string | null = null;
  let iommuReason: string;
  const amdIommus = devices.filter((d) => parsed.get(d.bdf)!.vendorId === 0x1022 && parsed.get(d.bdf)!.classCode >> 8 === 0x0806);
  if (Object.keys(groups).length === 0) iommuReason = 'no IOMMU groups in the dump: no unit';
  else if (amdIommus.length === 1) {
    iommuUnit = 'ivhd0';
    iommuReason = `one AMD IOMMU function (${amdIommus[0]!.bdf}): the kernel names its only AMD-Vi unit ivhd0`;
  } else if (amdIommus.length > 1)
    iommuReason = `${amdIommus.length} AMD IOMMU functions: their ivhdN numbering follows the IVRS table, which the dump does not show; no unit`;
  else iommuReason = 'Intel (or other) IOMMU: DMAR units are not PCI devices and their device scopes are not in the dump; no unit';
  if (iommuUnit) for (const s of specs) if (s.group !== null && s.group !== undefined) s.iommu = iommuUnit;

  const meta = {
    source,
    importedBy: 'isogroup import lspci',
    devices: devices.length,
    groups: Object.keys(groups).length,
    synthesizedExtended: synthesized,
    iommuUnit,
    iommuReason,
    vmd: [...hostOf.entries()].map(([dom, host]) => ({ domain: dom.toString(16), host })),
    problems,
  };
  return {
    spec: { devices: specs, iommuUnits: iommuUnit ? [iommuUnit] : [], meta: { 'import.json': `${JSON.stringify(meta, null, 1)}\n` } },
    result: { source, devices: outDevices, groups, iommuUnit, problems },
    meta,
  };
};

/** Parse lspci text and write the fixture root to outDir (which must not exist or be empty). */
export const importLspciText = (text: string, source: string, outDir: string): ImportResult => {
  const devices = parseLspci(text, source);
  const plan = planImport(devices, source);
  const dest = path.resolve(outDir);
  if (fs.existsSync(dest) && (!fs.statSync(dest).isDirectory() || fs.readdirSync(dest).length > 0)) {
    throw new IsogroupError('E_INVALID_INPUT', `output ${outDir} exists and is not an empty directory`, { out: outDir });
  }
  // Write beside the destination and rename, so a failure never leaves half a root.
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  try {
    writeFixtureRoot(tmp, plan.spec);
    fs.rmSync(dest, { recursive: true, force: true });
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.renameSync(tmp, dest);
  } catch (error) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw error;
  }
  return { root: dest, ...plan.result };
};
