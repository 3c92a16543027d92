import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { IsogroupError } from '../errors.js';

// Worker threads run compiled JavaScript. Run from the TypeScript sources (vitest), a worker entry
// point resolves to its build under dist/ instead (`npm test` builds first).

const packageRoot = fileURLToPath(new URL('../', import.meta.url));

/** The script for `new Worker()`: `file` next to the module at `base` (its import.meta.url). */
export const workerScript = (file: string, base: string): URL => {
  const url = new URL(file, base);
  if (!base.endsWith('.ts')) return url;
  const built = path.join(packageRoot, 'dist', path.relative(packageRoot, fileURLToPath(url)));
  if (!fs.existsSync(built)) {
    throw new IsogroupError('E_INTERNAL', `worker script ${built} is missing: run \`npm run build\` first`, { file: built });
  }
  return pathToFileURL(built);
};
