import * as fs from 'node:fs';
import { type ImportResult, importLspciText } from '../capture/lspci-import.js';
import { type SnapshotResult, writeSnapshot } from '../capture/snapshot.js';
import { IsogroupError } from '../errors.js';
import { openSession, type SessionOptions } from './session.js';

export type { ImportResult } from '../capture/lspci-import.js';
export type { SnapshotResult } from '../capture/snapshot.js';

/**
 * Turn `lspci -nnDvvvxxxx` (or -xxx, or a pciutils -xxxx dump) into a fixture root at outDir.
 * `input` is a file path, or `{ text, name? }` for text already in memory.
 */
export const importLspci = (input: string | { text: string; name?: string }, outDir: string): ImportResult => {
  if (typeof input === 'string') {
    let text: string;
    try {
      text = fs.readFileSync(input, 'utf8');
    } catch (error) {
      throw new IsogroupError(
        'E_INVALID_INPUT',
        `${input}: cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
        { file: input },
        { cause: error },
      );
    }
    return importLspciText(text, input, outDir);
  }
  return importLspciText(input.text, input.name ?? 'lspci output', outDir);
};

export interface SnapshotOptions extends SessionOptions {
  /** Output .tar.gz path. */
  out: string;
}

/** Capture the PCI/IOMMU part of a root's sysfs into a tarball with the oracle captures' layout. */
export const snapshot = (options: SnapshotOptions): SnapshotResult => {
  if (!options.out) throw new IsogroupError('E_USAGE', 'snapshot needs an output file (--out FILE.tar.gz)');
  return writeSnapshot(openSession(options).port(), options.out);
};
