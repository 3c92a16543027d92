import { execaSync } from 'execa';
import { IsogroupError } from '../errors.js';
import type { SysfsPort } from '../sysfs/port.js';

// Kernel modules the bind engine needs. A driver is usable once it shows up under
// sys/bus/pci/drivers; on the live host (root "/") a missing one is loaded with modprobe.

export interface ModuleLoader {
  /** Load a module (the fixture kernel registers its driver; the live host runs modprobe). */
  load(module: string): void;
}

export const driverLoaded = (port: SysfsPort, driver: string): boolean => port.exists(`sys/bus/pci/drivers/${driver}`);

export const modprobeLoader: ModuleLoader = {
  load(module) {
    try {
      execaSync('modprobe', [module], { timeout: 60_000 });
    } catch (error) {
      const e = error as { stderr?: string; shortMessage?: string; code?: string };
      throw new IsogroupError('E_MODULE_MISSING', `modprobe ${module} failed: ${(e.stderr || e.shortMessage || String(error)).trim()}`, { module }, { cause: error });
    }
  },
};

/**
 * Make sure a PCI driver is registered, loading its module when the root allows it.
 * `loader` null: the root is neither the live host nor simulated, nothing can be loaded.
 */
export const ensureDriver = (port: SysfsPort, driver: string, module: string, loader: ModuleLoader | null): void => {
  if (driverLoaded(port, driver)) return;
  if (!loader) {
    throw new IsogroupError('E_MODULE_MISSING', `module ${module} (driver ${driver}) is not loaded under ${port.root} and cannot be loaded there; load it with \`modprobe ${module}\``, { module, driver, root: port.root });
  }
  loader.load(module);
  if (!driverLoaded(port, driver)) {
    throw new IsogroupError('E_MODULE_MISSING', `module ${module} loaded but driver ${driver} did not register under ${port.root}/sys/bus/pci/drivers`, { module, driver });
  }
};
