// The copied binary, alone in an empty folder: the page hydrates from the site it carries, its
// static files are there, and the model it carries paints.
import { test, expect } from '@playwright/test';
import { models, paintWithSeed, screenshot } from '../tests/helpers';

test('a copied binary serves the hydrating app and paints with its own model', async ({ page, request }) => {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const [model] = await models(request);
  expect(model.name).toBe('shapes');

  for (const [path, type] of [
    ['/favicon.svg', 'image/svg+xml'],
    ['/robots.txt', 'text/plain'],
  ]) {
    const res = await request.get(path);
    expect(res.status(), path).toBe(200);
    expect(res.headers()['content-type'], path).toContain(type);
  }

  const ui = await paintWithSeed(page, 'a red circle on a blue background', 7);
  // Painted by the model the binary carries, at its default size.
  expect(await ui.image.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth)).toBe(model.defaultWidth);
  await screenshot(page, 'single-binary.png');
  expect(errors).toEqual([]);
});
