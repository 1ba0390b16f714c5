import { defineConfig } from '@playwright/test';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The tests run against the real release server with the default model, on a port of their own
// and a fresh data directory, so a server a developer left running on :3000 is never touched.
const port = Number(process.env.EASEL_E2E_PORT ?? 3300);
const baseURL = `http://127.0.0.1:${port}`;
const dataDir = process.env.EASEL_E2E_DATA_DIR ?? mkdtempSync(join(tmpdir(), 'easel-e2e-'));

export default defineConfig({
  testDir: './tests',
  outputDir: './test-results',
  timeout: 90_000,
  expect: { timeout: 20_000 },
  fullyParallel: false,
  workers: 1,
  // One retry in CI: a test that passes only on retry is still reported as flaky, with the
  // first attempt's trace kept under test-results/ to find out why.
  retries: process.env.CI ? 1 : 0,
  reporter: [['list']],
  use: {
    baseURL,
    browserName: 'chromium',
    launchOptions: {
      // Debian's Chromium; Playwright never downloads a browser here.
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
    acceptDownloads: true,
    trace: 'retain-on-first-failure',
  },
  webServer: {
    command: './target/release/easel',
    cwd: '..',
    // Ready means the model is loaded, not just that the port is open.
    url: `${baseURL}/readyz`,
    timeout: 120_000,
    reuseExistingServer: false,
    stdout: 'pipe',
    stderr: 'pipe',
    env: {
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      EASEL_DATA_DIR: dataDir,
      RUST_LOG: 'warn,easel=info',
    },
  },
});
