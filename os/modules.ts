import { execaSync } from 'execa';
import { IsogroupError } from '../errors.js';

// Loading kernel modules: on the live host with modprobe; the fixture kernel registers its own drivers.

export interface ModuleLoader {
  /** Load a module (the fixture kernel registers its driver; the live host runs modprobe). */
  load(module: string): void;
}

export const modprobeLoader: ModuleLoader = {
  load(module) {
    try {
      execaSync('modprobe', [module], { timeout: 60_000 });
    } catch (error) {
      const e = error as { stderr?: string; shortMessage?: string; code?: string };
      throw new IsogroupError(
        'E_MODULE_MISSING',
        `modprobe ${module} failed: ${(e.stderr || e.shortMessage || String(error)).trim()}`,
        { module },
        { cause: error },
      );
    }
  },
};
