import { IsogroupError } from '../errors.js';

// A PCI address DDDD:BB:DD.F, lower-case, domain at least 4 hex digits. Only parseBdf makes one.
export type Bdf = string & { readonly __brand: 'Bdf' };

const BDF_RE = /^([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/;

export interface BdfParts {
  domain: number;
  bus: number;
  device: number;
  fn: number;
}

export const splitBdf = (text: string): BdfParts | null => {
  const m = BDF_RE.exec(text);
  if (!m) return null;
  const device = parseInt(m[3]!, 16);
  if (device >= 0x20) return null;
  return { domain: parseInt(m[1]!, 16), bus: parseInt(m[2]!, 16), device, fn: parseInt(m[4]!, 10) };
};

export const isBdf = (text: unknown): text is Bdf => typeof text === 'string' && splitBdf(text) !== null;

export const formatBdf = ({ domain, bus, device, fn }: BdfParts): Bdf =>
  `${domain.toString(16).padStart(4, '0')}:${bus.toString(16).padStart(2, '0')}:${device
    .toString(16)
    .padStart(2, '0')}.${fn}` as Bdf;

// Validates user input; never let anything else become a path component.
export const parseBdf = (text: string, where = 'argument'): Bdf => {
  const parts = typeof text === 'string' ? splitBdf(text.trim()) : null;
  if (!parts) {
    throw new IsogroupError('E_INVALID_BDF', `${where}: ${JSON.stringify(text)} is not a PCI address (expected DDDD:BB:DD.F, e.g. 0000:00:1f.3)`, {
      value: text,
      where,
    });
  }
  return formatBdf(parts);
};

// Accepts the short BB:DD.F form too (domain 0000), as lspci prints it.
export const parseBdfLoose = (text: string, where = 'argument'): Bdf => {
  const t = typeof text === 'string' ? text.trim() : text;
  if (typeof t === 'string' && /^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/.test(t)) return parseBdf(`0000:${t}`, where);
  return parseBdf(t as string, where);
};

export const devfnOf = (p: BdfParts): number => (p.device << 3) | p.fn;

export const compareBdf = (a: string, b: string): number => {
  const pa = splitBdf(a);
  const pb = splitBdf(b);
  if (!pa || !pb) return a < b ? -1 : a > b ? 1 : 0;
  return pa.domain - pb.domain || pa.bus - pb.bus || pa.device - pb.device || pa.fn - pb.fn;
};

// "0000:05" for a BDF's bus.
export const busIdOf = (p: BdfParts): string =>
  `${p.domain.toString(16).padStart(4, '0')}:${p.bus.toString(16).padStart(2, '0')}`;

export const shortBdf = (bdf: string): string => (bdf.startsWith('0000:') ? bdf.slice(5) : bdf);
