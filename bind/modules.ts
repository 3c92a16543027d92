import { IsogroupError } from '../errors.js';
import type { ModuleLoader } from '../os/modules.js';
import { PCI_DRIVERS, pciDriver } from '../sysfs/paths.js';
import type { SysfsPort } from '../sysfs/port.js';

// A driver is usable once it shows up under the bus's drivers directory; a transaction loads the
// module first when the root can load one (the live host, the fixture kernel).

export const driverLoaded = (port: SysfsPort, driver: string): boolean => port.exists(pciDriver(driver));

/**
 * Make sure a PCI driver is registered, loading its module when the root allows it.
 * `loader` null: the root is neither the live host nor simulated, nothing can be loaded.
 */
export const ensureDriver = (port: SysfsPort, driver: string, module: string, loader: ModuleLoader | null): void => {
  if (driverLoaded(port, driver)) return;
  if (!loader) {
    throw new IsogroupError(
      'E_MODULE_MISSING',
      `module ${module} (driver ${driver}) is not loaded under ${port.root} and cannot be loaded there; load it with \`modprobe ${module}\``,
      { module, driver, root: port.root },
    );
  }
  loader.load(module);
  if (!driverLoaded(port, driver)) {
    throw new IsogroupError('E_MODULE_MISSING', `module ${module} loaded but driver ${driver} did not register under ${port.root}/${PCI_DRIVERS}`, {
      module,
      driver,
    });
  }
};
