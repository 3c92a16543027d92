import { isIsogroupError } from '../errors.js';
import { VFIO_DRIVER } from '../model/drivers.js';
import { pciDeviceFile } from '../sysfs/paths.js';
import type { SysfsPort } from '../sysfs/port.js';
import { currentDriver, currentOverride, runStep, type StepRecord } from './apply.js';
import type { GuardAction } from './guard.js';
import { assignStepsFor, type PlanStep, stepOverride } from './plan.js';

// Carry out one guard decision through the same steps the bind engine uses, reading the
// current state first (the decision may be a few milliseconds old) and the driver link after.

export interface GuardActionResult {
  action: GuardAction;
  ok: boolean;
  steps: StepRecord[];
  /** The driver the device is on afterwards (read back). */
  driverAfter: string | null;
  error?: { code: string; message: string };
}

export const stepsForAction = (port: SysfsPort, action: GuardAction): PlanStep[] => {
  const bdf = action.bdf;
  const driver = currentDriver(port, bdf);
  const override = currentOverride(port, bdf);
  switch (action.kind) {
    case 'claim':
    case 'repair':
      return assignStepsFor({ bdf, role: 'endpoint', driver, override });
    case 'unbind-bridge':
      return assignStepsFor({ bdf, role: 'bridge-unbind', driver, override });
    case 'set-override':
      return override === VFIO_DRIVER ? [] : [stepOverride(bdf, VFIO_DRIVER, action.reason)];
    case 'sriov-autoprobe-off':
      return [{ kind: 'override', bdf, file: pciDeviceFile(bdf, 'sriov_drivers_autoprobe'), value: '0', why: action.reason }];
  }
};

export const applyGuardAction = (port: SysfsPort, action: GuardAction): GuardActionResult => {
  const steps: StepRecord[] = [];
  try {
    for (const step of stepsForAction(port, action)) runStep(port, step, steps);
    return { action, ok: true, steps, driverAfter: currentDriver(port, action.bdf) };
  } catch (error) {
    const e = isIsogroupError(error) ? { code: error.code, message: error.message } : { code: 'E_INTERNAL', message: String(error) };
    return { action, ok: false, steps, driverAfter: currentDriver(port, action.bdf), error: e };
  }
};
