import { defineConfig } from '@playwright/test';
import base from './playwright.config';

// The release binary alone: copied into an empty folder and started there, with no Leptos.toml,
// no target/site and no models/ beside it. It must serve the whole hydrating app and paint with
// the model it carries.
const port = Number(process.env.EASEL_SINGLE_PORT ?? 3301);
const baseURL = `http://127.0.0.1:${port}`;

// The base config's server block (one object there): how to wait for it and show its output.
const baseServer = base.webServer as Exclude<NonNullable<typeof base.webServer>, unknown[]>;

export default defineConfig({
  ...base,
  testDir: './single',
  use: { ...base.use, baseURL },
  webServer: {
    ...baseServer,
    command: 'd=$(mktemp -d) && cp target/release/easel "$d/" && cd "$d" && exec ./easel',
    url: `${baseURL}/readyz`,
    // Nothing but the address and the log level: no data directory given (it makes its own).
    env: { LEPTOS_SITE_ADDR: `127.0.0.1:${port}`, RUST_LOG: 'warn,easel=info' },
  },
});
