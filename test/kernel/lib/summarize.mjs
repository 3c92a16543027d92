// Gathers each topology's checks.json into runs/<id>/results.json ({passed, failed, skipped, checks})
// and prints the summary. A topology whose guest did not finish (panic, timeout) or that ran fewer
// checks than planned counts as a failed check: nothing disappears silently.
//   node summarize.mjs RUNDIR TOPOLOGY...
import fs from 'node:fs';
import path from 'node:path';

const [run, ...topologies] = process.argv.slice(2);
const checks = [];
const read = (p) => {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return null;
  }
};
for (const topo of topologies) {
  const dir = path.join(run, topo);
  const rc = read(path.join(dir, 'boot-rc'))?.trim();
  let data = null;
  try {
    data = JSON.parse(read(path.join(dir, 'checks.json')) ?? 'null');
  } catch {
    /* a half-written file counts as missing */
  }
  if (!data) {
    const why = rc === '124' ? 'timeout' : rc === '125' ? 'the guest did not finish (see console.log)' : `no checks.json (rc ${rc})`;
    const tail = (read(path.join(dir, 'console.log')) ?? '').trim().split('\n').slice(-5);
    checks.push({ name: `${topo}/boot`, topology: topo, check: 'boot', status: 'failed', failures: [why, ...tail] });
    continue;
  }
  checks.push(...data.checks);
  const done = new Set(data.checks.map((c) => c.check));
  const lost = data.planned.filter((c) => !done.has(c));
  if (lost.length) {
    const tail = (read(path.join(dir, 'console.log')) ?? '').trim().split('\n').slice(-5);
    checks.push({
      name: `${topo}/incomplete`,
      topology: topo,
      check: 'incomplete',
      status: 'failed',
      failures: [`never ran: ${lost.join(', ')} (boot rc ${rc})`, ...tail],
    });
  }
}
const count = (s) => checks.filter((c) => c.status === s).length;
const results = { passed: count('pass'), failed: count('failed'), skipped: count('skipped'), topologies, checks };
fs.writeFileSync(path.join(run, 'results.json'), JSON.stringify(results, null, 1));

console.log('\n=============== real-kernel suite summary');
for (const c of checks) {
  const mark = c.status === 'pass' ? 'PASS' : c.status === 'failed' ? 'FAIL' : 'SKIP';
  console.log(`${mark}  ${c.name}${c.ms !== undefined ? ` (${(c.ms / 1000).toFixed(1)} s)` : ''}`);
  if (c.status === 'failed') for (const f of c.failures.slice(0, 4)) console.log(`        ${String(f).slice(0, 300)}`);
}
const timings = fs.existsSync(path.join(run, 'timings.txt')) ? fs.readFileSync(path.join(run, 'timings.txt'), 'utf8').trim() : '';
if (timings) console.log(`\n${timings}`);
console.log(
  `\nkernel: ${results.passed} passed, ${results.failed} failed${results.skipped ? `, ${results.skipped} skipped` : ''}  (${path.join(run, 'results.json')})`,
);
process.exit(results.failed > 0 || results.passed === 0 ? 1 : 0);
