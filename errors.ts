// One error type with a closed set of codes; the CLI maps codes to exit status in one place.

export const ERROR_CODES = {
  E_USAGE: 'bad arguments or options',
  E_INVALID_BDF: 'not a PCI address of the form DDDD:BB:DD.F',
  E_INVALID_INPUT: 'malformed input file or value',
  E_NOT_FOUND: 'no such device or group',
  E_DEVICE_GONE: 'the device vanished',
  E_SYSFS_IO: 'reading or writing sysfs failed',
  E_PERMISSION: 'permission denied',
  E_NO_IOMMU: 'no IOMMU translation for the device',
  E_NOT_VIABLE: 'group not viable for user assignment',
  E_GROUP_BUSY: 'group busy (locked, opened or assigned elsewhere)',
  E_ALREADY_ASSIGNED: 'group already assigned',
  E_NOT_ASSIGNED: 'group not assigned',
  E_HOST_IN_USE: 'the host is using the device',
  E_BIND_FAILED: 'driver bind failed',
  E_ROLLBACK_FAILED: 'rollback failed; journal kept for recover',
  E_JOURNAL_CORRUPT: 'journal unreadable or corrupt',
  E_STATE_DIR: 'state directory unusable',
  E_MODULE_MISSING: 'kernel module missing',
  E_POLICY_DENIED: 'policy denies the request',
  E_POLICY_INVALID: 'policy file invalid',
  E_CONTEXT: 'IOMMU context invariant violated',
  E_INCOMPATIBLE: 'groups cannot share one IOMMU context',
  E_IOVA_MISMATCH: 'kernel IOVA ranges differ from the computed ones',
  E_DAEMON: 'daemon request failed',
  E_NO_ROUTE: 'no such daemon API route',
  E_UNSUPPORTED: 'not supported on this host or input',
  E_INTERNAL: 'internal error',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

const brand = Symbol.for('isogroup.error');

export interface ErrorDetails {
  [key: string]: unknown;
}

export class IsogroupError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;
  readonly [brand] = true;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = details;
  }

  toJSON(): { code: ErrorCode; message: string; details: ErrorDetails } {
    return { code: this.code, message: this.message, details: this.details };
  }
}
Object.defineProperty(IsogroupError.prototype, 'name', { value: 'IsogroupError', enumerable: false });

export const isIsogroupError = (value: unknown): value is IsogroupError =>
  typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[brand] === true;

// Exit status: 0 ok, 1 refused or failed, 2 usage error (DESIGN.md).
export const exitCodeFor = (error: unknown): number => {
  if (isIsogroupError(error)) {
    return error.code === 'E_USAGE' || error.code === 'E_INVALID_BDF' ? 2 : 1;
  }
  return 1;
};

// errno from a Node fs error, translated once at the port.
export const codeForErrno = (errno: string | undefined): ErrorCode => {
  switch (errno) {
    case 'ENOENT':
    case 'ENODEV':
    case 'ENXIO':
      return 'E_DEVICE_GONE';
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return 'E_PERMISSION';
    case 'EBUSY':
      return 'E_GROUP_BUSY';
    default:
      return 'E_SYSFS_IO';
  }
};

export const errnoOf = (error: unknown): string | undefined =>
  typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'string'
    ? ((error as { code: string }).code)
    : undefined;
