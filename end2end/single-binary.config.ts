import { defineConfig } from '@playwright/test';
import base from './playwright.config';

// The release binary alone: copied into an empty folder and started there, with no Leptos.toml,
// no target/site and no models/ beside it. It must serve the whole hydrating app and paint with
// the model it carries.
const port = Number(process.env.EASEL_SINGLE_PORT ?? 3301);
const baseURL = `http://127.0.0.1:${port}`;

export default defineConfig({
  ...base,
  testDir: './single',
  use: { ...base.use, baseURL },
  webServer: {
    command: 'd=$(mktemp -d) && cp target/release/easel "$d/" && cd "$d" && exec ./easel',
    cwd: '..',
    url: `${baseURL}/readyz`,
    timeout: 120_000,
    reuseExistingServer: false,
    stdout: 'pipe',
    stderr: 'pipe',
    env: { LEPTOS_SITE_ADDR: `127.0.0.1:${port}`, RUST_LOG: 'warn,easel=info' },
  },
});
