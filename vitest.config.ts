import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: "forks",
    // The JSON report is what .ci/run counts (N passed, N failed); the default reporter is for people.
    reporters: ["default", ["json", { outputFile: ".vitest-report.json" }]],
  },
});
