// From a 360 px phone to a desktop, light and dark: nothing overflows, every control has a
// label, and the themes follow prefers-color-scheme. No submits.
import { test, expect } from '@playwright/test';
import { find, openHydrated } from './helpers';

for (const width of [360, 768, 1280]) {
  test(`fits a ${width}px wide screen`, async ({ page }) => {
    await page.setViewportSize({ width, height: 800 });
    await openHydrated(page);
    await find(page).advanced.click();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    // The result box fits the screen too.
    const box = (await find(page).frame.boundingBox())!;
    expect(box.x).toBeGreaterThanOrEqual(0);
    expect(box.x + box.width).toBeLessThanOrEqual(width);
  });
}

test('every form control is labelled and the status region is polite', async ({ page }) => {
  await openHydrated(page);
  await find(page).advanced.click();
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('textarea, select, input:not([type=hidden])')]
      .filter((el) => !(el as HTMLInputElement).labels?.length && !el.getAttribute('aria-label'))
      .map((el) => el.outerHTML),
  );
  expect(unlabelled).toEqual([]);
  await expect(page.locator('[aria-live="polite"]')).toHaveCount(1);
  await expect(find(page).status).toHaveAttribute('aria-live', 'polite');
});

test('light and dark themes follow prefers-color-scheme', async ({ page }) => {
  await page.emulateMedia({ colorScheme: 'light' });
  await openHydrated(page);
  const light = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.emulateMedia({ colorScheme: 'dark' });
  const dark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  expect(light).not.toEqual(dark);
  // Dark is dark: the background's brightness is low.
  const [r, g, b] = dark.match(/\d+/g)!.map(Number);
  expect(r + g + b).toBeLessThan(150);
});
