// Prints "N passed, N failed" from the test runners' own JSON results (vitest, and the kernel suite).
import { existsSync, readFileSync } from 'node:fs';

const [label, ...files] = process.argv.slice(2);
let passed = 0;
let failed = 0;
let skipped = 0;
let read = 0;
for (const file of files) {
  if (!existsSync(file)) continue;
  const r = JSON.parse(readFileSync(file, 'utf8'));
  read++;
  if (typeof r.numPassedTests === 'number') {
    passed += r.numPassedTests;
    failed += r.numFailedTests;
    skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  } else if (typeof r.passed === 'number') {
    passed += r.passed;
    failed += r.failed;
    skipped += r.skipped ?? 0;
  }
}
if (read === 0) {
  console.log(`${label}: no test results found`);
  process.exit(1);
}
console.log(`${label}: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
