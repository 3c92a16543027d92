import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    exclude: ['test/kernel/**', 'node_modules/**', 'dist/**'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    restoreMocks: true,
    // 2 cores: keep parallelism modest so CLI/child-process tests do not starve each other.
    maxWorkers: 2,
  },
});
