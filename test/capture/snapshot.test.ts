import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tar from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { snapshot } from '../../api/capture.js';
import { deviceJson } from '../../api/devices.js';
import { resetsForHost } from '../../api/groups.js';
import { scan } from '../../api/read.js';
import { buildConfig } from '../../bench/config-builder.js';
import { writeFixtureRoot } from '../../capture/fixture-writer.js';
import { nodeSnapshotFs, type SnapshotFs, writeSnapshot } from '../../capture/snapshot.js';
import { runCli } from '../../cli/main.js';
import type { HostSnapshot } from '../../model/device.js';
import { NodeSysfsPort } from '../../sysfs/port.js';
import { oracleCaptures } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

interface Member {
  type: string;
  mode: number;
  size: number;
  linkpath: string;
  data: string;
}

// Every member of a .tar.gz by path: type, mode bits, link target and content.
const readTar = (file: string): Map<string, Member> => {
  const out = new Map<string, Member>();
  tar.t({
    file,
    sync: true,
    onReadEntry: (e) => {
      const chunks: Buffer[] = [];
      e.on('data', (c: Buffer) => chunks.push(c));
      e.on('end', () => {
        out.set(e.path.replace(/\/$/, ''), {
          type: e.type,
          mode: (e.mode ?? 0) & 0o7777,
          size: e.size ?? 0,
          linkpath: e.linkpath ?? '',
          data: Buffer.concat(chunks).toString('base64'),
        });
      });
    },
  });
  return out;
};

// Unpack with the archive's exact mode bits (GNU tar -p; node-tar would apply the umask), so a capture
// of the unpacked tree can be compared member for member with the original.
const unpackExact = (tgz: string, into: string): void => {
  fs.mkdirSync(into, { recursive: true });
  execFileSync('tar', ['xzpf', tgz, '-C', into]);
};

// A 0555 directory (sys/ in the captures) keeps a non-root user from deleting its children.
const removeTree = (dir: string): void => {
  execFileSync('chmod', ['-R', 'u+w', dir]);
  fs.rmSync(dir, { recursive: true, force: true });
};

const without = (m: Map<string, Member>, ...names: string[]): Map<string, Member> => new Map([...m].filter(([k]) => !names.includes(k)));

// What a user of the model sees: devices (full JSON), groups, config bytes.
const modelOf = (s: HostSnapshot) => ({
  devices: [...s.devices.values()].map((d) => ({ ...deviceJson(d, resetsForHost(s, null).device(d.bdf)), sysfsPath: d.sysfsPath })),
  groups: [...s.kernelGroups.values()].map((g) => ({
    id: g.id,
    devices: g.devices,
    type: g.type,
    regions: g.reservedRegions.map((r) => `${r.start}-${r.end}-${r.type}`),
  })),
  units: [...s.iommuUnits.values()],
  config: [...s.config.entries()].map(([b, c]) => [b, Buffer.from(c).toString('hex')]),
  problems: s.problems,
  autoprobe: s.driversAutoprobe,
});

describe.each(oracleCaptures())('snapshot of the unpacked capture $name', ({ tarball }) => {
  let dir = '';
  let root = '';
  let first = new Map<string, Member>();
  let result: ReturnType<typeof snapshot>;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isogroup-snap-'));
    root = path.join(dir, 'root');
    unpackExact(tarball, root);
    result = snapshot({ root, out: path.join(dir, 's1.tar.gz') });
    first = readTar(path.join(dir, 's1.tar.gz'));
  }, 180_000);
  afterAll(() => removeTree(dir));

  it("has exactly the capture's members: paths, types, modes, link targets, contents", () => {
    expect(without(first, 'meta/snapshot.json')).toEqual(readTar(tarball));
    expect(result.errors).toEqual([]);
    expect(JSON.parse(Buffer.from(first.get('meta/snapshot.json')!.data, 'base64').toString()).readErrors).toEqual([]);
  });

  it('re-scans to the same model as the capture, and a snapshot of it is the same archive', () => {
    const fromCapture = scan({ root, pciIds: null });
    expect(result.devices).toBe(fromCapture.devices.size);
    const again = path.join(dir, 'again');
    unpackExact(path.join(dir, 's1.tar.gz'), again);
    expect(modelOf(scan({ root: again, pciIds: null }))).toEqual(modelOf(fromCapture));
    snapshot({ root: again, out: path.join(dir, 's2.tar.gz') });
    expect(without(readTar(path.join(dir, 's2.tar.gz')), 'meta/snapshot.json')).toEqual(without(first, 'meta/snapshot.json'));
  }, 180_000);
});

// A fixture root with traps around the parts the capture walks.
const trapRoot = (): { root: string; secret: string } => {
  const base = tmpDir();
  const root = path.join(base, 'root');
  const secret = 'SECRET-OUTSIDE-THE-ROOT';
  fs.writeFileSync(path.join(base, 'outside.txt'), secret);
  fs.mkdirSync(path.join(base, 'outside-dir'));
  fs.writeFileSync(path.join(base, 'outside-dir', 'data'), secret);
  writeFixtureRoot(root, {
    devices: [
      {
        bdf: '0000:00:01.0',
        config: buildConfig({ vendor: 0x8086, device: 0x1901, classCode: 0x060400, bridge: true, secondary: 1, subordinate: 1, pcieType: 4 }),
        driver: 'pcieport',
        group: '1',
        iommu: 'dmar0',
      },
      {
        bdf: '0000:01:00.0',
        parent: '0000:00:01.0',
        config: buildConfig({ vendor: 0x10de, device: 0x2204, classCode: 0x030000, pcieType: 0 }),
        driver: 'nvidia',
        group: '2',
        iommu: 'dmar0',
      },
    ],
  });
  const dev = path.join(root, 'sys/devices/pci0000:00/0000:00:01.0');
  fs.writeFileSync(path.join(dev, 'resource0'), secret); // a BAR: never read
  fs.writeFileSync(path.join(dev, 'rom'), secret);
  fs.writeFileSync(path.join(dev, 'vpd'), secret);
  fs.symlinkSync('../../../../outside.txt', path.join(dev, 'label')); // attribute that is a link out
  fs.symlinkSync('../../../../outside-dir', path.join(dev, 'power')); // a "subdir with files" that is a link out
  fs.symlinkSync('../../../../../outside-dir', path.join(root, 'sys/bus/pci/drivers/evil'));
  fs.symlinkSync('../../../outside-dir', path.join(root, 'sys/class/iommu/evil'));
  fs.mkdirSync(path.join(root, 'sys/devices/virtual/iommu/dmar0/devices'), { recursive: true });
  return { root, secret };
};

describe('snapshot safety', () => {
  it('never follows a symlink out of the root and never reads resourceN, rom or vpd', () => {
    const { root, secret } = trapRoot();
    const reads: string[] = [];
    const inner = nodeSnapshotFs(root);
    const spy: SnapshotFs = {
      ...inner,
      readFile: (rel) => {
        reads.push(rel);
        return inner.readFile(rel);
      },
    };
    const out = path.join(tmpDir(), 's.tar.gz');
    writeSnapshot(new NodeSysfsPort(root), out, spy);
    const members = readTar(out);
    for (const [p, m] of members) expect(Buffer.from(m.data, 'base64').toString().includes(secret), p).toBe(false);
    expect(reads.filter((r) => /\/(resource\d+|rom|vpd)$/.test(r))).toEqual([]);
    const dev = 'sys/devices/pci0000:00/0000:00:01.0';
    // Links are kept as links, exactly as found, and never entered.
    expect(members.get(`${dev}/label`)).toMatchObject({ type: 'SymbolicLink', linkpath: '../../../../outside.txt' });
    expect(members.get(`${dev}/power`)).toMatchObject({ type: 'SymbolicLink' });
    expect(members.has(`${dev}/power/data`)).toBe(false);
    expect(members.get('sys/class/iommu/evil')).toMatchObject({ type: 'SymbolicLink' });
    expect([...members.keys()].some((k) => k.startsWith('sys/bus/pci/drivers/evil/'))).toBe(false);
    for (const f of ['resource0', 'rom', 'vpd']) expect(members.get(`${dev}/${f}`)).toMatchObject({ type: 'File', size: 0 });
    expect(members.get(`${dev}/config`)!.size).toBe(4096);
  });

  it('stores a file that fails with EIO or EACCES empty and lists it in meta/snapshot.json', () => {
    const { root } = trapRoot();
    const inner = nodeSnapshotFs(root);
    const failing: SnapshotFs = {
      ...inner,
      readFile: (rel) => {
        if (rel.endsWith('0000:01:00.0/config')) throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
        if (rel.endsWith('0000:01:00.0/numa_node')) throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
        return inner.readFile(rel);
      },
    };
    const out = path.join(tmpDir(), 's.tar.gz');
    const r = writeSnapshot(new NodeSysfsPort(root), out, failing);
    const dev = 'sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0';
    expect(r.errors).toEqual([`${dev}/config: EIO`, `${dev}/numa_node: EACCES`]);
    const members = readTar(out);
    expect(members.get(`${dev}/config`)).toMatchObject({ type: 'File', size: 0, mode: 0o644 });
    expect(JSON.parse(Buffer.from(members.get('meta/snapshot.json')!.data, 'base64').toString()).readErrors).toEqual(r.errors);
  });

  it('refuses a root without sys/ and writes nothing', () => {
    const out = path.join(tmpDir(), 's.tar.gz');
    expect(() => snapshot({ root: tmpDir(), out })).toThrow(expect.objectContaining({ code: 'E_INVALID_INPUT' }));
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('CLI: snapshot', () => {
  it('writes the tarball for --root and exits 2 without --out', async () => {
    const { root } = trapRoot();
    const out = path.join(tmpDir(), 'host.tar.gz');
    const lines: string[] = [];
    const io = { stdout: (t: string) => lines.push(t), stderr: (t: string) => lines.push(t) };
    expect(await runCli(['--root', root, 'snapshot', '--out', out, '--json'], io)).toBe(0);
    expect(JSON.parse(lines.join(''))).toMatchObject({ out, devices: 2, groups: 2 });
    expect(scan({ root: out, pciIds: null }).devices.size).toBe(2);
    expect(await runCli(['--root', root, 'snapshot'], io)).toBe(2);
  });
});
