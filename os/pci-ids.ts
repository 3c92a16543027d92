import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { type PciIds, parsePciIds } from '../model/pci-ids.js';

// The host's pci.ids, where hwdata/pciutils install it.

export const DEFAULT_PCI_IDS_PATHS = [
  '/usr/share/misc/pci.ids',
  '/usr/share/hwdata/pci.ids',
  '/usr/share/pci.ids',
  '/usr/local/share/pci.ids',
  '/usr/share/misc/pci.ids.gz',
];

/** Load the first pci.ids found (the session passes ISOGROUP_PCI_IDS when set); null when the host has none. */
export const loadPciIds = (paths: readonly string[] = DEFAULT_PCI_IDS_PATHS): PciIds | null => {
  for (const p of paths) {
    try {
      const raw = fs.readFileSync(p);
      const text = p.endsWith('.gz') ? zlib.gunzipSync(raw).toString('utf8') : raw.toString('utf8');
      return parsePciIds(text, p);
    } catch {}
  }
  return null;
};
