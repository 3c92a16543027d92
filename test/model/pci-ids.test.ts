import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { lookupNames, parsePciIds } from '../../model/pci-ids.js';
import { loadPciIds } from '../../os/pci-ids.js';
import { bundledCapture, repoRoot } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

// A tiny crafted database in the pci.ids format: vendors, devices, subsystems, classes.
const CRAFTED = [
  '# crafted for isogroup tests',
  '8086  Crafted Intel',
  '\t10d3  Crafted 82574L NIC',
  '\t\t8086 0000  Crafted subsystem',
  '\t29c0  Crafted DRAM controller',
  '1af4  Crafted Red Hat',
  '\t1000  Crafted virtio-net',
  'C 02  Network controller',
  '\t00  Ethernet controller',
  '\t80  Network controller',
  'C 06  Bridge',
  '\t00  Host bridge',
  '\t04  PCI bridge',
  '',
].join('\n');

describe('pci.ids', () => {
  it('names vendor, device, subsystem and class', () => {
    const ids = parsePciIds(CRAFTED, 'crafted');
    expect(lookupNames(ids, '0x8086', '0x10d3', '0x020000', '0x8086', '0x0000')).toEqual({
      vendor: 'Crafted Intel',
      device: 'Crafted 82574L NIC',
      className: 'Ethernet controller',
      subsystem: 'Crafted subsystem',
    });
    expect(lookupNames(ids, '0x8086', '0xffff', '0x068000', null, null)).toEqual({
      vendor: 'Crafted Intel',
      device: null,
      className: 'Bridge',
      subsystem: null,
    });
    expect(lookupNames(ids, '0x1234', '0x0001', '0x990000', null, null)).toEqual({ vendor: null, device: null, className: null, subsystem: null });
  });

  it('loads a plain or gzipped file and returns null when there is none', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'pci.ids'), CRAFTED);
    fs.writeFileSync(path.join(dir, 'pci.ids.gz'), zlib.gzipSync(CRAFTED));
    expect(loadPciIds([path.join(dir, 'pci.ids')])!.vendors.get(0x1af4)!.name).toBe('Crafted Red Hat');
    expect(
      loadPciIds([path.join(dir, 'pci.ids.gz')])!
        .vendors.get(0x8086)!
        .devices.get(0x29c0)!.name,
    ).toBe('Crafted DRAM controller');
    expect(loadPciIds([path.join(dir, 'missing.ids')])).toBeNull();
  });

  it('`devices` uses the database named by ISOGROUP_PCI_IDS', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'pci.ids');
    fs.writeFileSync(file, CRAFTED);
    const r = await execa(path.join(repoRoot, 'bin/isogroup'), ['--root', bundledCapture('mixed'), 'devices', '--json'], { env: { ISOGROUP_PCI_IDS: file } });
    const byBdf = new Map(
      (JSON.parse(r.stdout).devices as { bdf: string; vendorName: string | null; deviceName: string | null; className: string | null }[]).map((d) => [
        d.bdf,
        d,
      ]),
    );
    expect(byBdf.get('0000:00:02.0')).toMatchObject({ vendorName: 'Crafted Intel', deviceName: 'Crafted 82574L NIC', className: 'Ethernet controller' });
    expect(byBdf.get('0000:00:01.0')).toMatchObject({ vendorName: 'Crafted Red Hat', deviceName: 'Crafted virtio-net' });
    expect(byBdf.get('0000:00:10.0')).toMatchObject({ vendorName: null, deviceName: null, className: 'PCI bridge' });
  });
});
