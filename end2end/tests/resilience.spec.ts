// When the event stream fails the page polls job_status instead; when polling fails too it
// says the connection is lost, and "Reconnect" picks the job up again.
//
// Submits used here: 1.
import { test, expect } from '@playwright/test';
import { find, openHydrated } from './helpers';

test('stream broken: the page falls back to polling; network lost: it says so and reconnects', async ({ page }) => {
  await openHydrated(page);
  const ui = find(page);

  // No event stream at all, and (for now) no status answers either.
  await page.route('**/api/jobs/*/events', (route) => route.abort('connectionfailed'));
  let statusCalls = 0;
  await page.route('**/sfn/status', (route) => {
    statusCalls += 1;
    return route.abort('internetdisconnected');
  });

  await ui.prompt.fill('a lighthouse in a storm');
  await ui.generate.click();
  await expect(ui.result).toHaveAttribute('data-state', /^(queued|processing)$/);
  const jobId = (await ui.result.getAttribute('data-job-id'))!;

  // Three failed polls (2 s apart) and the page gives the network-lost message.
  await expect(ui.error).toHaveAttribute('data-error-kind', 'network', { timeout: 20_000 });
  await expect(ui.error).toContainText('Lost contact with the server');
  expect(statusCalls).toBeGreaterThanOrEqual(3);

  // The connection is back (the stream still is not): Reconnect polls and finishes the job.
  await page.unroute('**/sfn/status');
  const polled = page.waitForRequest('**/sfn/status');
  await page.getByTestId('reconnect').click();
  await polled;
  await expect(ui.result).toHaveAttribute('data-state', 'completed', { timeout: 30_000 });
  await expect(ui.result).toHaveAttribute('data-job-id', jobId);
  await expect(ui.image).toBeVisible();
});
