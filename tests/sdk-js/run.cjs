// What the scenario scripts share. Each is run as `node SCRIPT.cjs ENDPOINT SCENARIO`: it runs
// that scenario against the Stratus at ENDPOINT, prints "SCENARIO: ok", and exits non-zero with
// the failed assertion otherwise. tests/test_sdk_js.py runs every scenario on a Stratus of its own.
"use strict";

const assert = require("node:assert/strict");

// The error a call fails with; fails the scenario if it succeeds.
async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("the call succeeded");
}

// Runs the scenario the command line names, with a client configuration for the endpoint.
function main(scenarios) {
  const [endpoint, name] = process.argv.slice(2);
  const scenario = scenarios[name];
  if (!scenario) {
    console.error(`unknown scenario ${name}; one of: ${Object.keys(scenarios).join(", ")}`);
    process.exit(2);
  }
  const config = { endpoint, region: "us-east-1", credentials: { accessKeyId: "test", secretAccessKey: "test" } };
  scenario(endpoint, config).then(
    () => console.log(`${name}: ok`),
    (error) => {
      console.error(error);
      process.exit(1);
    },
  );
}

module.exports = { failure, main };
