// Structured logs on stderr, one line per event: JSON (default) or logfmt. Under systemd (JOURNAL_STREAM
// set) each line starts with the sd-daemon priority prefix "<N>" so journald files it at the right level,
// and the timestamp is left out (journald stamps every line itself).
import { IsogroupError, isIsogroupError } from '../errors.js';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFormat = 'json' | 'logfmt';
export type LogFields = Record<string, unknown>;

// sd-daemon(3): <7> debug, <6> info, <4> warning, <3> err.
const PRIORITY: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };
const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  readonly level: LogLevel;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** Where lines go (default process.stderr). */
  stream?: { write(line: string): unknown };
  level?: LogLevel;
  format?: LogFormat;
  /** Prefix lines with <N> priorities and drop the timestamp (under systemd: the CLI passes JOURNAL_STREAM's presence). */
  journal?: boolean;
  fields?: LogFields;
  clock?: () => Date;
}

export const parseLogLevel = (text: string, where = '--log-level'): LogLevel => {
  if ((LOG_LEVELS as readonly string[]).includes(text)) return text as LogLevel;
  throw new IsogroupError('E_USAGE', `${where}: ${JSON.stringify(text)} is not a log level (${LOG_LEVELS.join(', ')})`, { value: text, where });
};

// Values as they should appear in a log line: bigint as hex-free decimal string, errors as their code/message.
const plain = (value: unknown): unknown => {
  if (typeof value === 'bigint') return value.toString();
  if (isIsogroupError(value)) return { code: value.code, message: value.message, details: value.details };
  if (value instanceof Error) return { name: value.name, message: value.message };
  return value;
};

const jsonReplacer = (_key: string, value: unknown): unknown => plain(value);

const logfmtValue = (value: unknown): string => {
  const v = plain(value);
  const text = typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v, jsonReplacer);
  return text === '' || /[\s"=\\]/.test(text) ? JSON.stringify(text) : text;
};

/** Format one log line (without the trailing newline). Exported for tests and other sinks. */
export const formatLine = (format: LogFormat, record: LogFields): string => {
  if (format === 'json') return JSON.stringify(record, jsonReplacer);
  return Object.entries(record)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k.replace(/[\s=]/g, '_')}=${logfmtValue(v)}`)
    .join(' ');
};

export const createLogger = (options: LoggerOptions = {}): Logger => {
  const stream = options.stream ?? process.stderr;
  const level = options.level ?? 'info';
  const format = options.format ?? 'json';
  const journal = options.journal ?? false;
  const clock = options.clock ?? (() => new Date());
  const base = options.fields ?? {};
  const write = (at: LogLevel, msg: string, fields: LogFields = {}): void => {
    if (RANK[at] < RANK[level]) return;
    // Reserved keys first, so a field named "msg" cannot hide the message.
    const record: LogFields = journal ? { level: at, msg } : { ts: clock().toISOString(), level: at, msg };
    for (const [k, v] of Object.entries({ ...base, ...fields })) if (!(k in record)) record[k] = v;
    const line = formatLine(format, record).replace(/\n/g, '\\n');
    try {
      stream.write(`${journal ? `<${PRIORITY[at]}>` : ''}${line}\n`);
    } catch {
      // A logger must never take the daemon down (stderr closed, EPIPE).
    }
  };
  const make = (fields: LogFields): Logger => ({
    level,
    debug: (msg, f) => write('debug', msg, { ...fields, ...f }),
    info: (msg, f) => write('info', msg, { ...fields, ...f }),
    warn: (msg, f) => write('warn', msg, { ...fields, ...f }),
    error: (msg, f) => write('error', msg, { ...fields, ...f }),
    child: (more) => make({ ...fields, ...more }),
  });
  return make({});
};

/** A logger that drops everything (library callers that pass none). */
export const silentLogger: Logger = createLogger({ stream: { write: () => undefined }, level: 'error', journal: false });
