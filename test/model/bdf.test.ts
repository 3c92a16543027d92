import { describe, expect, it } from 'vitest';
import { compareBdf, formatBdf, isBdf, parseBdf, splitBdf } from '../../model/bdf.js';
import { seededRandom } from '../helpers/rand.js';

// splitBdf has a regex-free path for the 12-character form; it must agree with the definition
// (DDDD:BB:DD.F, 4-8 hex digit domain, device < 0x20, function 0-7) on every input.
const reference = (text: string) => {
  const m = /^([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/.exec(text);
  if (!m || parseInt(m[3]!, 16) >= 0x20) return null;
  return { domain: parseInt(m[1]!, 16), bus: parseInt(m[2]!, 16), device: parseInt(m[3]!, 16), fn: parseInt(m[4]!, 10) };
};

// Pseudo-random strings near the BDF shape (seeded, so a failure reproduces).
const rand = seededRandom(0x2545f491);
const ALPHABET = '0123456789abcdefABCDEFgG:.-/ ';
const nearBdf = (): string => {
  const base = [...formatBdf({ domain: rand(3) === 0 ? rand(0x10000) : 0, bus: rand(256), device: rand(0x24), fn: rand(9) })];
  for (let k = rand(3); k > 0; k--) base[rand(base.length)] = ALPHABET[rand(ALPHABET.length)]!;
  return base.join('');
};

describe('BDF parsing', () => {
  it('agrees with the definition on edge cases and 20,000 near-BDF strings', () => {
    const edges = [
      '0000:00:1f.7',
      '0000:00:20.0',
      '0000:00:1f.8',
      'ffff:ff:1f.7',
      'FFFF:FF:1F.7',
      '0000:0g:00.0',
      '0000-00:00.0',
      '0000:00:00:0',
      '10000:00:00.0',
      'ffffffff:00:00.0',
      '000:00:00.0',
      '0000:00:00.0 ',
      '../../etc',
      '',
      '0000:00:00.-',
    ];
    for (const t of [...edges, ...Array.from({ length: 20000 }, nearBdf)]) {
      expect([t, splitBdf(t)]).toEqual([t, reference(t)]);
      expect([t, isBdf(t)]).toEqual([t, reference(t) !== null]);
    }
  });

  it('orders by domain, bus, device, function, whatever the case or domain width', () => {
    const bdfs: string[] = Array.from({ length: 3000 }, () =>
      formatBdf({ domain: rand(4) === 0 ? rand(0x20000) : 0, bus: rand(256), device: rand(0x20), fn: rand(8) }),
    );
    bdfs.push('0000:0A:00.0', '0000:0b:00.0', '0000:0C:1F.7');
    const tuple = (t: string) => {
      const p = reference(t)!;
      return [p.domain, p.bus, p.device, p.fn];
    };
    const byTuple = (a: string, b: string) => {
      const x = tuple(a);
      const y = tuple(b);
      for (let i = 0; i < 4; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
      return 0;
    };
    expect([...bdfs].sort(compareBdf)).toEqual([...bdfs].sort(byTuple));
    expect(compareBdf('0000:0b:00.0', '0000:0A:00.0')).toBeGreaterThan(0);
    expect(compareBdf('0001:00:00.0', '10000:00:00.0')).toBeLessThan(0);
  });

  it('refuses text that is not a PCI address, and normalises case and domain width', () => {
    expect(() => parseBdf('../../etc')).toThrow(/not a PCI address/);
    expect(() => parseBdf('0000:00:20.0')).toThrow(/not a PCI address/);
    expect(parseBdf(' 0000:0A:1F.7 ')).toBe('0000:0a:1f.7');
  });
});
