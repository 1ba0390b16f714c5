import { test, expect } from '@playwright/test';

test('the page is server-rendered, then hydrates and reacts to input', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));

  await page.goto('/');
  // Server-rendered: the counter is in the HTML before any WASM runs.
  const counter = page.getByTestId('prompt-counter');
  await expect(counter).toHaveText('0 / 1000');

  // Hydration marks the body once the WASM has taken over.
  await expect(page.locator('body[data-hydrated="true"]')).toBeAttached();

  // Only the WASM can update the counter as the visitor types.
  await page.getByLabel('Prompt', { exact: true }).fill('a red fox in the snow');
  await expect(counter).toHaveText('21 / 1000');

  await page.screenshot({ path: test.info().outputPath('hydrated.png'), fullPage: true });
  expect(errors).toEqual([]);
});
