// Turns jira.js's zod schemas of the Jira Cloud operations the contract server serves into JSON
// Schema (zod 4's own converter), once, at `e2e/integrations build` time.
//
// AUDIT_SCHEMAS=true is jira.js's strict mode: objects refuse unknown keys and enums are closed,
// so a misspelt field fails instead of being passed through.
//
// Usage: AUDIT_SCHEMAS=true node jira_schemas.mjs <node_modules dir> <out.json>
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';

const [modules, out] = process.argv.slice(2);
if (process.env.AUDIT_SCHEMAS !== 'true') {
  throw new Error('run with AUDIT_SCHEMAS=true (jira.js strict schemas)');
}
const load = (rel) => import(pathToFileURL(join(modules, rel)).href);
const { z } = await load('zod/index.js');
const params = await load('jira.js/dist/cloud/parameters/index.js');
const models = await load('jira.js/dist/cloud/models/index.js');

// Operation -> the jira.js parameters schema (path, query and body fields in one object, as the
// client takes them) and the model of the documented answer.
const wanted = {
  createIssue: ['CreateIssueSchema', 'CreatedIssueSchema'],
  getIssue: ['GetIssueSchema', 'IssueSchema'],
  addComment: ['AddCommentSchema', 'CommentSchema'],
  getTransitions: ['GetTransitionsSchema', 'TransitionsSchema'],
  doTransition: ['DoTransitionSchema', null],
  searchJqlGet: ['SearchAndReconsileIssuesUsingJqlSchema', 'SearchAndReconcileResultsSchema'],
  searchJqlPost: ['SearchAndReconsileIssuesUsingJqlPostSchema', 'SearchAndReconcileResultsSchema'],
};
const toJson = (schema) =>
  z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' });
const result = { source: 'jira.js', operations: {} };
for (const [op, [p, m]] of Object.entries(wanted)) {
  if (!params[p]) throw new Error(`jira.js has no ${p}`);
  if (m && !models[m]) throw new Error(`jira.js has no ${m}`);
  result.operations[op] = {
    parameters: toJson(params[p]),
    response: m ? toJson(models[m]) : null,
  };
}
writeFileSync(out, JSON.stringify(result, null, 1));
