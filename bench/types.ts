// What a benchmark module is and what it is given.

export interface BenchContext {
  /** Scratch directory for this module (removed afterwards unless --keep). */
  workDir: string;
  /** Device counts to generate. */
  sizes: number[];
  log: (line: string) => void;
  /** Print an aligned table. */
  table: (headers: string[], rows: (string | number)[][]) => void;
}

export interface BenchModule {
  name: string;
  description: string;
  run: (ctx: BenchContext) => Promise<void> | void;
}
