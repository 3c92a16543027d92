import { describe, expect, it } from 'vitest';
import { createLogger, formatLine, parseLogLevel } from '../../daemon/log.js';
import { IsogroupError } from '../../errors.js';

const capture = () => {
  const lines: string[] = [];
  return { lines, stream: { write: (l: string) => lines.push(l) } };
};
const clock = () => new Date('2026-11-22T12:00:00.000Z');

describe('structured logs', () => {
  it('writes one JSON object per line with ts, level, msg and fields; below-level lines are dropped', () => {
    const { lines, stream } = capture();
    const log = createLogger({ stream, level: 'info', journal: false, clock, fields: { component: 'guard' } });
    log.debug('not shown');
    log.info('group held', { group: '7', devices: ['0000:0a:04.0'] });
    log.error('repair failed', { error: new IsogroupError('E_BIND_FAILED', 'vfio-pci refused 0000:0a:04.0', { bdf: '0000:0a:04.0' }), size: 1n << 40n });
    expect(lines).toHaveLength(2);
    expect(lines.every((l) => l.endsWith('\n') && l.indexOf('\n') === l.length - 1)).toBe(true);
    expect(JSON.parse(lines[0]!)).toEqual({
      ts: '2026-11-22T12:00:00.000Z',
      level: 'info',
      msg: 'group held',
      component: 'guard',
      group: '7',
      devices: ['0000:0a:04.0'],
    });
    expect(JSON.parse(lines[1]!)).toMatchObject({
      level: 'error',
      error: { code: 'E_BIND_FAILED', message: 'vfio-pci refused 0000:0a:04.0', details: { bdf: '0000:0a:04.0' } },
      size: '1099511627776',
    });
  });

  it('child loggers add fields; a field cannot overwrite msg or level; newlines never split a line', () => {
    const { lines, stream } = capture();
    const log = createLogger({ stream, journal: false, clock }).child({ owner: 'alice' });
    log.warn('two\nlines', { msg: 'spoof', level: 'debug' });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.split('\n')).toHaveLength(2); // the content plus the terminating newline
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'warn', msg: 'two\nlines', owner: 'alice' });
  });

  it('under journald: <N> priority prefix, no timestamp', () => {
    const { lines, stream } = capture();
    const log = createLogger({ stream, level: 'debug', journal: true, clock });
    log.debug('d');
    log.info('i');
    log.warn('w');
    log.error('e');
    expect(lines.map((l) => l.slice(0, 3))).toEqual(['<7>', '<6>', '<4>', '<3>']);
    expect(JSON.parse(lines[1]!.slice(3))).toEqual({ level: 'info', msg: 'i' });
  });

  it('logfmt quotes values with spaces, quotes or equals signs', () => {
    expect(formatLine('logfmt', { level: 'info', msg: 'group held', group: '7', n: 3, ok: true, path: 'a=b', q: 'say "hi"', list: [1, 2] })).toBe(
      'level=info msg="group held" group=7 n=3 ok=true path="a=b" q="say \\"hi\\"" list=[1,2]',
    );
  });

  it('parses --log-level and refuses anything else with a usage error', () => {
    expect(parseLogLevel('warn')).toBe('warn');
    expect(() => parseLogLevel('loud')).toThrow(expect.objectContaining({ code: 'E_USAGE', message: expect.stringContaining('loud') }));
  });
});
