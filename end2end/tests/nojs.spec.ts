// Before (or without) the WASM: the form posts to the server function, the server-rendered
// page shows the job and refreshes itself until the picture is there; a refused post comes
// back to the page with its error.
//
// Submits used here: 2.
import { test, expect } from '@playwright/test';
import { find } from './helpers';

test.use({ javaScriptEnabled: false });

test('without JavaScript: submit, follow the job on the server-rendered page, get the image', async ({ page, request }) => {
  await page.goto('/');
  const ui = find(page);
  await expect(ui.result).toHaveAttribute('data-state', 'idle');
  await ui.prompt.fill('a paper boat on a pond');
  await ui.generate.click();

  // Back on the page (302 to the Referer): the job is there, queued/processing or already done.
  await expect(page).toHaveURL(/\/$/);
  await expect(ui.result).toHaveAttribute('data-state', /^(queued|processing|completed)$/);
  // The page refreshes itself while the job runs, until the image is there.
  await expect(ui.result).toHaveAttribute('data-state', 'completed', { timeout: 60_000 });
  await expect(ui.image).toBeVisible();
  const src = (await ui.image.getAttribute('src'))!;
  const res = await request.get(src);
  expect(res.headers()['content-type']).toBe('image/png');
  // The finished page no longer refreshes itself.
  expect(await page.locator('noscript').count()).toBe(0);
  // The prompt is kept in the form for the next picture.
  await expect(ui.prompt).toHaveValue('a paper boat on a pond');
});

test('without JavaScript: a refused post comes back to the page with its categorized error', async ({ page }) => {
  await page.goto('/');
  const ui = find(page);
  await ui.prompt.fill('    ');
  await ui.generate.click();
  await expect(ui.error).toHaveAttribute('data-error-kind', 'invalid_prompt');
  // In the page's own words: error text in a URL could have been written by anyone.
  await expect(ui.error).toContainText("The prompt can't be painted as written");
  // The refused form comes back as it was sent, not as the last job's.
  await expect(ui.prompt).toHaveValue('    ');
});
