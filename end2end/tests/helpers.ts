// Shared helpers for the browser tests, split into find / act / check (as in leptos'
// todo_app_sqlite_axum e2e fixtures).
import { expect, type APIRequestContext, type Locator, type Page } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

export type Model = {
  name: string;
  defaultWidth: number;
  defaultHeight: number;
  minSize: number;
  maxWidth: number;
  maxHeight: number;
  defaultSteps: number;
  maxSteps: number;
};

// ---- find ----------------------------------------------------------------------------------

/** The models the server offers (the real limits: never hard-coded). */
export async function models(request: APIRequestContext): Promise<Model[]> {
  const res = await request.get('/api/models');
  expect(res.ok()).toBeTruthy();
  const list = (await res.json()) as Model[];
  expect(list.length).toBeGreaterThan(0);
  return list;
}

export const find = (page: Page) => ({
  prompt: page.getByLabel('Prompt', { exact: true }),
  generate: page.getByRole('button', { name: 'Generate' }),
  advanced: page.locator('details.advanced > summary'),
  steps: page.getByLabel('Steps', { exact: true }),
  seed: page.getByLabel('Seed', { exact: true }),
  size: page.getByLabel('Size', { exact: true }),
  model: page.getByLabel('Model', { exact: true }),
  result: page.getByTestId('result'),
  frame: page.getByTestId('frame'),
  status: page.getByTestId('job-status'),
  progress: page.getByTestId('progress'),
  image: page.getByTestId('result-image'),
  error: page.getByTestId('error'),
  cancel: page.getByRole('button', { name: 'Cancel' }),
  download: page.getByTestId('download'),
  history: page.getByTestId('history'),
});

// ---- act -----------------------------------------------------------------------------------

/** Opens the page and waits until the WASM has taken over. */
export async function openHydrated(page: Page) {
  await page.goto('/');
  await expect(page.locator('body[data-hydrated="true"]')).toBeAttached();
}

/** Waits for the shown job to reach a terminal state; returns that state's name. */
export async function waitForTerminal(page: Page, timeout = 60_000): Promise<string> {
  const result = find(page).result;
  await expect(result).toHaveAttribute('data-state', /^(completed|failed|cancelled|error)$/, { timeout });
  return (await result.getAttribute('data-state')) ?? '';
}

/** Records every layout-shift entry from the very start of the page (run before goto). */
export async function recordLayoutShifts(page: Page) {
  await page.addInitScript(() => {
    const w = window as unknown as { __shifts: unknown[] };
    w.__shifts = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries() as unknown as {
        value: number;
        hadRecentInput: boolean;
        sources?: { node?: Node }[];
      }[]) {
        w.__shifts.push({
          value: e.value,
          hadRecentInput: e.hadRecentInput,
          sources: (e.sources ?? []).map((s) => {
            const el = s.node instanceof Element ? s.node : s.node?.parentElement;
            return `${s.node?.nodeName}: ${el?.outerHTML.slice(0, 160)}`;
          }),
        });
      }
    }).observe({ type: 'layout-shift', buffered: true });
  });
}

/** Opens the page, paints `prompt` with a fixed seed (the same pixels every run) and waits for
 * the picture. */
export async function paintWithSeed(page: Page, prompt: string, seed: number) {
  await openHydrated(page);
  const ui = find(page);
  await ui.advanced.click();
  await ui.seed.fill(String(seed));
  await ui.prompt.fill(prompt);
  await ui.generate.click();
  await expect(ui.result).toHaveAttribute('data-state', 'completed', { timeout: 60_000 });
  return ui;
}

/** Checks the shown picture as the default model should paint "a red circle on a blue
 * background": red in the middle, blue at the corners and edge midpoints of the border. */
export async function expectRedCircleOnBlue(image: Locator) {
  const pixels = await image.evaluate((img: HTMLImageElement) => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const g = canvas.getContext('2d')!;
    g.drawImage(img, 0, 0);
    const at = (x: number, y: number) => Array.from(g.getImageData(x, y, 1, 1).data.slice(0, 3));
    const [w, h] = [canvas.width, canvas.height];
    return { centre: at(w / 2, h / 2), border: [at(2, 2), at(w - 3, 2), at(2, h - 3), at(w - 3, h - 3), at(w / 2, 2), at(2, h / 2)] };
  });
  const [r, g, b] = pixels.centre;
  expect(r > 150 && g < 100 && b < 100, `centre ${pixels.centre} is red`).toBe(true);
  for (const [br, , bb] of pixels.border) {
    expect(bb > 150 && br < 100, `border ${JSON.stringify(pixels.border)} is blue`).toBe(true);
  }
}

export async function layoutShifts(page: Page) {
  return page.evaluate(() => (window as unknown as { __shifts: { value: number; sources: string[] }[] }).__shifts);
}

/** Saves a screenshot under end2end/test-results/screenshots/. */
export async function screenshot(page: Page, name: string) {
  const dir = resolve(__dirname, '..', 'test-results', 'screenshots');
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, name), fullPage: true });
}

// ---- check ---------------------------------------------------------------------------------

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Checks the PNG signature and the IHDR chunk; returns the image's size. */
export function pngSize(bytes: Buffer): { width: number; height: number } {
  expect(bytes.length).toBeGreaterThan(33);
  expect(bytes.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
  expect(bytes.subarray(12, 16).toString('ascii')).toBe('IHDR');
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

/** The `parameters` tEXt chunk of a PNG, if any. */
export function pngParameters(bytes: Buffer): string | undefined {
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = bytes.readUInt32BE(offset);
    const type = bytes.subarray(offset + 4, offset + 8).toString('ascii');
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    if (type === 'tEXt') {
      const nul = data.indexOf(0);
      if (data.subarray(0, nul).toString('latin1') === 'parameters') return data.subarray(nul + 1).toString('latin1');
    }
    if (type === 'iTXt') {
      const nul = data.indexOf(0);
      if (data.subarray(0, nul).toString('latin1') === 'parameters') {
        // keyword\0 flag method lang\0 translated\0 text
        let p = nul + 3;
        p = data.indexOf(0, p) + 1;
        p = data.indexOf(0, p) + 1;
        return data.subarray(p).toString('utf8');
      }
    }
    if (type === 'IEND') break;
    offset += 12 + length;
  }
  return undefined;
}
