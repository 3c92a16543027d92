// One error type with a closed set of codes. This table is the only place that says what a code
// means, which exit status the CLI gives it, which HTTP status the daemon answers it with and which
// gRPC status the kubelet device plugin answers it with.

interface ErrorMeaning {
  message: string;
  /** CLI exit status: 1 refused or failed, 2 usage error. */
  exit: 1 | 2;
  /** HTTP status on the daemon's socket. */
  http: number;
  /** gRPC status code for the kubelet (3 INVALID_ARGUMENT, 5 NOT_FOUND, 6 ALREADY_EXISTS, 7 PERMISSION_DENIED, 9 FAILED_PRECONDITION, 12 UNIMPLEMENTED, 13 INTERNAL, 14 UNAVAILABLE). */
  grpc: number;
}

export const ERRORS = {
  E_USAGE: { message: 'bad arguments or options', exit: 2, http: 400, grpc: 3 },
  E_INVALID_BDF: { message: 'not a PCI address of the form DDDD:BB:DD.F', exit: 2, http: 400, grpc: 3 },
  E_INVALID_INPUT: { message: 'malformed input file or value', exit: 1, http: 400, grpc: 3 },
  E_NOT_FOUND: { message: 'no such device or group', exit: 1, http: 404, grpc: 5 },
  E_DEVICE_GONE: { message: 'the device vanished', exit: 1, http: 404, grpc: 5 },
  E_SYSFS_IO: { message: 'reading or writing sysfs failed', exit: 1, http: 500, grpc: 13 },
  E_PERMISSION: { message: 'permission denied', exit: 1, http: 403, grpc: 7 },
  E_NO_IOMMU: { message: 'no IOMMU translation for the device', exit: 1, http: 409, grpc: 9 },
  E_NOT_VIABLE: { message: 'group not viable for user assignment', exit: 1, http: 409, grpc: 9 },
  E_GROUP_BUSY: { message: 'group busy (locked, opened or assigned elsewhere)', exit: 1, http: 409, grpc: 9 },
  E_ALREADY_ASSIGNED: { message: 'group already assigned', exit: 1, http: 409, grpc: 6 },
  E_NOT_ASSIGNED: { message: 'group not assigned', exit: 1, http: 409, grpc: 9 },
  E_HOST_IN_USE: { message: 'the host is using the device', exit: 1, http: 409, grpc: 9 },
  E_BIND_FAILED: { message: 'driver bind failed', exit: 1, http: 500, grpc: 13 },
  E_ROLLBACK_FAILED: { message: 'rollback failed; journal kept for recover', exit: 1, http: 500, grpc: 13 },
  E_JOURNAL_CORRUPT: { message: 'journal unreadable or corrupt', exit: 1, http: 500, grpc: 13 },
  E_STATE_DIR: { message: 'state directory unusable', exit: 1, http: 500, grpc: 13 },
  E_MODULE_MISSING: { message: 'kernel module missing', exit: 1, http: 500, grpc: 13 },
  E_POLICY_DENIED: { message: 'policy denies the request', exit: 1, http: 403, grpc: 7 },
  E_POLICY_INVALID: { message: 'policy file invalid', exit: 1, http: 400, grpc: 3 },
  E_CONTEXT: { message: 'IOMMU context invariant violated', exit: 1, http: 409, grpc: 9 },
  E_INCOMPATIBLE: { message: 'groups cannot share one IOMMU context', exit: 1, http: 409, grpc: 9 },
  E_IOVA_MISMATCH: { message: 'kernel IOVA ranges differ from the computed ones', exit: 1, http: 500, grpc: 13 },
  E_DAEMON: { message: 'daemon request failed', exit: 1, http: 500, grpc: 13 },
  E_NO_ROUTE: { message: 'no such daemon API route', exit: 1, http: 404, grpc: 12 },
  E_UNSUPPORTED: { message: 'not supported on this host or input', exit: 1, http: 501, grpc: 12 },
  E_UNHEALTHY: { message: 'pool device unhealthy: gone, not viable or not held', exit: 1, http: 409, grpc: 9 },
  E_KUBELET: { message: 'the kubelet refused or did not answer', exit: 1, http: 502, grpc: 14 },
  E_INTERNAL: { message: 'internal error', exit: 1, http: 500, grpc: 13 },
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

/** gRPC status for any error (anything untyped is INTERNAL). */
export const grpcStatusFor = (error: unknown): number => (isIsogroupError(error) && isErrorCode(error.code) ? ERRORS[error.code].grpc : 13);

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
