import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { linkTargetRel, NodeSysfsPort, resolveUnder } from '../../sysfs/port.js';
import { seededRandom } from '../helpers/rand.js';

// linkTargetRel drops components for the usual "../../x" sysfs link instead of normalizing; it must
// give what path normalization gives (null for anything that climbs out of the root).
const reference = (linkRel: string, target: string): string | null => {
  if (target.startsWith('/')) return path.posix.normalize(target).replace(/^\/+/, '');
  const joined = path.posix.normalize(path.posix.join(path.posix.dirname(linkRel), target));
  return joined.startsWith('..') ? null : joined;
};

const rand = seededRandom(0x1234567);
const PARTS = ['sys', 'bus', 'pci', 'devices', '0000:00:01.0', '..', '.', '', 'pci0000:00', '.hidden', 'a..b'];
const randomPath = (max: number): string => Array.from({ length: 1 + rand(max) }, () => PARTS[rand(PARTS.length)]).join('/');

describe('linkTargetRel', () => {
  it('resolves the kernel link shapes', () => {
    expect(linkTargetRel('sys/bus/pci/devices/0000:00:01.0', '../../../devices/pci0000:00/0000:00:01.0')).toBe('sys/devices/pci0000:00/0000:00:01.0');
    expect(linkTargetRel('sys/devices/pci0000:00/0000:00:01.0/iommu_group', '../../../kernel/iommu_groups/7')).toBe('sys/kernel/iommu_groups/7');
    expect(linkTargetRel('sys/x', '../../etc')).toBeNull();
    expect(linkTargetRel('sys/x', '../etc')).toBe('etc');
  });

  it('agrees with path normalization on 20,000 random links', () => {
    for (let i = 0; i < 20000; i++) {
      const from = randomPath(6);
      const to = rand(10) === 0 ? `/${randomPath(4)}` : `${'../'.repeat(rand(6))}${randomPath(4)}`;
      expect([from, to, linkTargetRel(from, to)]).toEqual([from, to, reference(from, to)]);
    }
  });
});

describe('NodeSysfsPort paths', () => {
  it('maps every root-relative path as resolveUnder does, also right after a clean path in the same directory', () => {
    const port = new NodeSysfsPort('/r/oot');
    const names = ['vendor', '..', '.', '.hidden', '', 'a\0b', 'x/..', 'config', '../../../etc'];
    for (let i = 0; i < 5000; i++) {
      const dir = randomPath(5);
      for (const rel of [`${dir}/config`, `${dir}/${names[rand(names.length)]}`, `${dir}/${names[rand(names.length)]}`]) {
        expect([rel, port.abs(rel)]).toEqual([rel, resolveUnder('/r/oot', rel)]);
      }
    }
    expect(port.abs('sys/bus/pci/devices/0000:00:01.0/vendor')).toBe('/r/oot/sys/bus/pci/devices/0000:00:01.0/vendor');
    expect(port.abs('sys/bus/pci/devices/0000:00:01.0/../../../../../etc')).toBe('/r/oot/etc');
  });
});
