import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';
import { repoRoot } from './paths.js';

/**
 * Transpile a repo module and its relative imports into `outDir` (same relative layout, .js files),
 * so a plain `node` child process can import the current sources without a build step. A
 * node_modules symlink makes bare imports (koffi, execa) resolve. Returns the path of each entry.
 */
export const transpileForChild = (outDir: string, entries: string[]): string[] => {
  const seen = new Set<string>();
  const visit = (rel: string): void => {
    const norm = path.normalize(rel);
    if (seen.has(norm)) return;
    seen.add(norm);
    const source = fs.readFileSync(path.join(repoRoot, norm), 'utf8');
    const out = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
      fileName: norm,
    }).outputText;
    const target = path.join(outDir, norm.replace(/\.ts$/, '.js'));
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, out);
    for (const m of source.matchAll(/from\s+'(\.{1,2}\/[^']+)\.js'/g)) {
      visit(path.join(path.dirname(norm), `${m[1]}.ts`));
    }
  };
  for (const e of entries) visit(e);
  fs.writeFileSync(path.join(outDir, 'package.json'), '{"type":"module"}\n');
  if (!fs.existsSync(path.join(outDir, 'node_modules'))) fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(outDir, 'node_modules'));
  return entries.map((e) => path.join(outDir, e.replace(/\.ts$/, '.js')));
};
