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

const hexDigit = (c: number): number => (c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1);

/**
 * The BDF as one number (domain, bus, device, function in that order of weight), or -1 when the text
 * is not the 12-character DDDD:BB:DD.F form. No regex and no allocation: scans split and sort 10,000s.
 */
const shortFormKey = (t: string): number => {
  if (t.length !== 12 || t.charCodeAt(4) !== 58 || t.charCodeAt(7) !== 58 || t.charCodeAt(10) !== 46) return -1;
  const d0 = hexDigit(t.charCodeAt(0));
  const d1 = hexDigit(t.charCodeAt(1));
  const d2 = hexDigit(t.charCodeAt(2));
  const d3 = hexDigit(t.charCodeAt(3));
  const b0 = hexDigit(t.charCodeAt(5));
  const b1 = hexDigit(t.charCodeAt(6));
  const s0 = hexDigit(t.charCodeAt(8));
  const s1 = hexDigit(t.charCodeAt(9));
  const fn = t.charCodeAt(11) - 48;
  if ((d0 | d1 | d2 | d3 | b0 | b1 | s0 | s1) < 0 || fn < 0 || fn > 7) return -1;
  const device = s0 * 16 + s1;
  if (device >= 0x20) return -1;
  return (((d0 * 16 + d1) * 16 + d2) * 16 + d3) * 65536 + (b0 * 16 + b1) * 256 + device * 8 + fn;
};

const partsOfKey = (key: number): BdfParts => {
  const low = key % 65536;
  return { domain: (key - low) / 65536, bus: low >> 8, device: (low >> 3) & 0x1f, fn: low & 7 };
};

export const splitBdf = (text: string): BdfParts | null => {
  const key = shortFormKey(text);
  if (key >= 0) return partsOfKey(key);
  const m = BDF_RE.exec(text);
  if (!m) return null;
  const device = parseInt(m[3]!, 16);
  if (device >= 0x20) return null;
  return { domain: parseInt(m[1]!, 16), bus: parseInt(m[2]!, 16), device, fn: parseInt(m[4]!, 10) };
};

export const isBdf = (text: unknown): text is Bdf => typeof text === 'string' && (shortFormKey(text) >= 0 || splitBdf(text) !== null);

export const formatBdf = ({ domain, bus, device, fn }: BdfParts): Bdf =>
  `${domain.toString(16).padStart(4, '0')}:${bus.toString(16).padStart(2, '0')}:${device.toString(16).padStart(2, '0')}.${fn}` as Bdf;

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

// The short BB:DD.F form, as lspci and isogroup print it, stands for domain 0000.
const withDomain = (t: string): string => (/^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/.test(t) ? `0000:${t}` : t);

/** A PCI address typed by a user: DDDD:BB:DD.F, or the short BB:DD.F form. */
export const parseBdfLoose = (text: string, where = 'argument'): Bdf => parseBdf(typeof text === 'string' ? withDomain(text.trim()) : text, where);

export const compareBdf = (a: string, b: string): number => {
  const ka = shortFormKey(a);
  const kb = shortFormKey(b);
  if (ka >= 0 && kb >= 0) return ka - kb;
  const pa = splitBdf(a);
  const pb = splitBdf(b);
  if (!pa || !pb) return a < b ? -1 : a > b ? 1 : 0;
  return pa.domain - pb.domain || pa.bus - pb.bus || pa.device - pb.device || pa.fn - pb.fn;
};

// "0000:05" for a BDF's bus.
export const busIdOf = (p: BdfParts): string => `${p.domain.toString(16).padStart(4, '0')}:${p.bus.toString(16).padStart(2, '0')}`;

export const shortBdf = (bdf: string): string => (bdf.startsWith('0000:') ? bdf.slice(5) : bdf);

/** A GROUP|BDF argument: an IOMMU group number, or a device standing for its whole group. */
export type GroupTarget = { groupId: string } | { bdf: Bdf };

/** Parse a GROUP|BDF argument; a BDF may be the short BB:DD.F form the tool itself prints (domain 0000). */
export const parseTarget = (text: unknown): GroupTarget => {
  const t = typeof text === 'string' ? text.trim() : typeof text === 'number' && Number.isInteger(text) ? String(text) : '';
  if (/^\d{1,9}$/.test(t)) return { groupId: String(Number(t)) };
  if (isBdf(withDomain(t))) return { bdf: parseBdfLoose(t, 'group or device') };
  throw new IsogroupError('E_INVALID_BDF', `${JSON.stringify(text)} is neither an IOMMU group number nor a PCI address (DDDD:BB:DD.F or BB:DD.F)`, {
    value: text,
  });
};

export const describeTarget = (target: GroupTarget): string => ('groupId' in target ? `group ${target.groupId}` : `device ${target.bdf}`);
