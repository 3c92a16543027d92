// One error type with a closed set of codes. This table is the only place that says what a code
// means, which exit status the CLI gives it and which HTTP status the daemon answers it with.

interface ErrorMeaning {
  message: string;
  /** CLI exit status: 1 refused or failed, 2 usage error. */
  exit: 1 | 2;
  /** HTTP status on the daemon's socket. */
  http: number;
}

export const ERRORS = {
  E_USAGE: { message: 'bad arguments or options', exit: 2, http: 400 },
  E_INVALID_BDF: { message: 'not a PCI address of the form DDDD:BB:DD.F', exit: 2, http: 400 },
  E_INVALID_INPUT: { message: 'malformed input file or value', exit: 1, http: 400 },
  E_NOT_FOUND: { message: 'no such device or group', exit: 1, http: 404 },
  E_DEVICE_GONE: { message: 'the device vanished', exit: 1, http: 404 },
  E_SYSFS_IO: { message: 'reading or writing sysfs failed', exit: 1, http: 500 },
  E_PERMISSION: { message: 'permission denied', exit: 1, http: 403 },
  E_NO_IOMMU: { message: 'no IOMMU translation for the device', exit: 1, http: 409 },
  E_NOT_VIABLE: { message: 'group not viable for user assignment', exit: 1, http: 409 },
  E_GROUP_BUSY: { message: 'group busy (locked, opened or assigned elsewhere)', exit: 1, http: 409 },
  E_ALREADY_ASSIGNED: { message: 'group already assigned', exit: 1, http: 409 },
  E_NOT_ASSIGNED: { message: 'group not assigned', exit: 1, http: 409 },
  E_HOST_IN_USE: { message: 'the host is using the device', exit: 1, http: 409 },
  E_BIND_FAILED: { message: 'driver bind failed', exit: 1, http: 500 },
  E_ROLLBACK_FAILED: { message: 'rollback failed; journal kept for recover', exit: 1, http: 500 },
  E_JOURNAL_CORRUPT: { message: 'journal unreadable or corrupt', exit: 1, http: 500 },
  E_STATE_DIR: { message: 'state directory unusable', exit: 1, http: 500 },
  E_MODULE_MISSING: { message: 'kernel module missing', exit: 1, http: 500 },
  E_POLICY_DENIED: { message: 'policy denies the request', exit: 1, http: 403 },
  E_POLICY_INVALID: { message: 'policy file invalid', exit: 1, http: 400 },
  E_CONTEXT: { message: 'IOMMU context invariant violated', exit: 1, http: 409 },
  E_INCOMPATIBLE: { message: 'groups cannot share one IOMMU context', exit: 1, http: 409 },
  E_IOVA_MISMATCH: { message: 'kernel IOVA ranges differ from the computed ones', exit: 1, http: 500 },
  E_DAEMON: { message: 'daemon request failed', exit: 1, http: 500 },
  E_NO_ROUTE: { message: 'no such daemon API route', exit: 1, http: 404 },
  E_UNSUPPORTED: { message: 'not supported on this host or input', exit: 1, http: 501 },
  E_INTERNAL: { message: 'internal error', exit: 1, http: 500 },
} as const satisfies Record<string, ErrorMeaning>;

export type ErrorCode = keyof typeof ERRORS;

/** Each code's one-line meaning. */
export const ERROR_CODES: Readonly<Record<ErrorCode, string>> = Object.fromEntries(Object.entries(ERRORS).map(([code, m]) => [code, m.message])) as Record<
  ErrorCode,
  string
>;

export const isErrorCode = (code: unknown): code is ErrorCode => typeof code === 'string' && Object.hasOwn(ERRORS, code);

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

/** CLI exit status: 0 ok, 1 refused or failed, 2 usage error (anything untyped is a failure). */
export const exitCodeFor = (error: unknown): number => (isIsogroupError(error) && isErrorCode(error.code) ? ERRORS[error.code].exit : 1);

/** HTTP status for an error code. */
export const httpStatusFor = (code: ErrorCode): number => ERRORS[code].http;

/** An error as it crosses a thread or a socket, and back into the same typed error. */
export interface WireError {
  code: string;
  message: string;
  details?: ErrorDetails;
}

export const toWireError = (error: unknown): WireError =>
  isIsogroupError(error) ? error.toJSON() : { code: 'E_INTERNAL', message: error instanceof Error ? error.message : String(error) };

export const fromWireError = (wire: WireError, extra: ErrorDetails = {}): IsogroupError =>
  new IsogroupError(isErrorCode(wire.code) ? wire.code : 'E_INTERNAL', wire.message, { ...(wire.details ?? {}), ...extra });

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
  typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'string' ? (error as { code: string }).code : undefined;
