// What a command produces and where it goes: the data (printed as JSON under --json), a text renderer,
// warnings for stderr, and whether the result is a failure (exit 1). Only cli/main.ts prints and
// decides the exit status.

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

export interface Output {
  data: unknown;
  text: () => string;
  /** Lines for stderr (always, --json or not). */
  warnings?: string[];
  /** A result that says "no" (groups --compare disagreeing, the kernel's IOVA ranges differing): exit 1. */
  failed?: boolean;
}

/** How a command hands its result over: it runs `action` and gives the Output to cli/main.ts. */
export type Run = (action: () => Output | Promise<Output>) => Promise<void>;

export const output = (data: unknown, text: () => string, extra: Omit<Output, 'data' | 'text'> = {}): Output => ({ data, text, ...extra });

// BigInt (IOVA addresses) as hex strings.
export const jsonReplacer = (_key: string, value: unknown): unknown => (typeof value === 'bigint' ? `0x${value.toString(16)}` : value);

/** Left-aligned text table. */
export const table = (headers: string[], rows: (string | number | null | undefined)[][]): string => {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : (c ?? '').padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
};
