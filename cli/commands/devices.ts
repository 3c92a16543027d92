import type { Command } from 'commander';
import { listDevices, showDevice } from '../../api/devices.js';
import { output, type Run } from '../io.js';
import { sessionOf } from '../options.js';
import { renderDevices, renderShow } from '../render/devices.js';

export const registerDevices = (program: Command, run: Run): void => {
  program
    .command('devices')
    .description('list every PCI function: ids, names, driver, kernel group, port type, ACS, SR-IOV, problems')
    .action((_opts, cmd: Command) =>
      run(() => {
        const result = listDevices(sessionOf(cmd));
        return output(result, () => renderDevices(result));
      }),
    );

  program
    .command('show')
    .description('one device in full: capabilities, the bridge path to its root bus, its group')
    .argument('<bdf>', 'PCI address DDDD:BB:DD.F')
    .action((bdf: string, _opts, cmd: Command) =>
      run(() => {
        const result = showDevice(bdf, sessionOf(cmd));
        return output(result, () => renderShow(result));
      }),
    );
};
