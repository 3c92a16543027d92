// The kubelet resources file (`daemon --kubelet-resources FILE`): JSON when it ends in .json, YAML
// otherwise, validated by pool/resources.ts. Any problem is E_INVALID_INPUT naming the file.

import * as fs from 'node:fs';
import { parseDocument } from 'yaml';
import { errnoOf, IsogroupError } from '../errors.js';
import { parseResourceRules, type ResourceRules } from '../pool/resources.js';

const MAX_BYTES = 1 << 20;

export const loadResourceRules = (file: string): ResourceRules => {
  let text: string;
  try {
    if (fs.statSync(file).size > MAX_BYTES) throw new IsogroupError('E_INVALID_INPUT', `resources file ${file} is larger than ${MAX_BYTES} bytes`, { file });
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof IsogroupError) throw error;
    throw new IsogroupError('E_INVALID_INPUT', `resources file ${file}: cannot read it (${errnoOf(error) ?? String(error)})`, { file }, { cause: error });
  }
  let value: unknown;
  if (file.toLowerCase().endsWith('.json')) {
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new IsogroupError('E_INVALID_INPUT', `${file}: not JSON (${(error as Error).message})`, { file }, { cause: error });
    }
  } else {
    const doc = parseDocument(text, { uniqueKeys: true });
    if (doc.errors.length > 0) throw new IsogroupError('E_INVALID_INPUT', `${file}: not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`, { file });
    value = doc.toJS();
  }
  return parseResourceRules(value ?? {}, file);
};
