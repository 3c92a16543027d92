import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/paths.js';

// The Layout's rule: imports only run down this order (folders on one line are one tier).
const TIERS = [
  ['errors.ts'],
  ['model'],
  ['os', 'sysfs', 'groups'],
  ['pool'],
  ['state'],
  ['capture'],
  ['sim'],
  ['bind'],
  ['api'],
  ['daemon'],
  ['kubelet'],
  ['cli'],
];
const tierOf = (rel: string): number => TIERS.findIndex((t) => t.includes(rel.split('/')[0]!));

const sources = (dir: string): string[] =>
  fs.readdirSync(path.join(repoRoot, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return sources(rel);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [rel] : [];
  });

describe('layout', () => {
  it('imports only run down the folder order', () => {
    const upward: string[] = [];
    const files = [
      'errors.ts',
      ...TIERS.flat()
        .filter((f) => f !== 'errors.ts')
        .flatMap((d) => sources(d)),
    ];
    for (const file of files) {
      const from = tierOf(file);
      const text = fs.readFileSync(path.join(repoRoot, file), 'utf8');
      for (const m of text.matchAll(/^(?:import|export)[^'"]*from '(\.[^']+)'/gm)) {
        const target = path.relative(repoRoot, path.resolve(path.dirname(path.join(repoRoot, file)), m[1]!));
        const to = tierOf(target);
        if (to > from) upward.push(`${file} -> ${target}`);
      }
    }
    expect(upward).toEqual([]);
  });
});
