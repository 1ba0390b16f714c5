// This visitor's history: newest first, kept across a reload, and a picked item comes back
// into the result area and the form.
//
// Submits used here: 2.
import { test, expect } from '@playwright/test';
import { find, openHydrated } from './helpers';

test('recent pictures survive a reload, newest first, and restore their parameters', async ({ page }) => {
  await openHydrated(page);
  const ui = find(page);
  await expect(page.getByTestId('history-empty')).toBeVisible();

  const ids: string[] = [];
  for (const [prompt, seed] of [
    ['first: a quiet harbour', '111'],
    ['second: a busy market', '222'],
  ]) {
    await ui.advanced.click();
    await ui.seed.fill(seed);
    await ui.advanced.click();
    await ui.prompt.fill(prompt);
    await ui.generate.click();
    await expect(ui.result).toHaveAttribute('data-state', 'completed', { timeout: 60_000 });
    ids.push((await ui.result.getAttribute('data-job-id'))!);
  }
  await expect(ui.history.locator('li')).toHaveCount(2);

  await page.reload();
  await expect(page.locator('body[data-hydrated="true"]')).toBeAttached();
  const items = ui.history.locator('button.thumb');
  await expect(items).toHaveCount(2);
  // Newest first.
  await expect(items.nth(0)).toHaveAttribute('data-job-id', ids[1]);
  await expect(items.nth(1)).toHaveAttribute('data-job-id', ids[0]);
  await expect(items.nth(0)).toHaveAccessibleName(/second: a busy market/);
  // After a reload the latest picture is shown again.
  await expect(ui.result).toHaveAttribute('data-job-id', ids[1]);
  await expect(ui.image).toBeVisible();

  // Picking the older one shows it and restores its parameters (keyboard: focus + Enter).
  await items.nth(1).focus();
  await page.keyboard.press('Enter');
  await expect(ui.result).toHaveAttribute('data-job-id', ids[0]);
  await expect(ui.result).toHaveAttribute('data-state', 'completed');
  await expect(ui.image).toHaveAttribute('src', `/api/images/${ids[0]}.png`);
  await expect(ui.prompt).toHaveValue('first: a quiet harbour');
  await expect(ui.seed).toHaveValue('111');
  await expect(items.nth(1)).toHaveClass(/current/);
});
