// The rate limit (8 submits a minute per IP, shared by the JSON API and the page): runs last
// (file name), because every test in a run shares the IP 127.0.0.1 and its budget. It spends
// whatever budget is left through the JSON API, then submits through the page.
import { test, expect, type APIRequestContext } from '@playwright/test';
import { find, openHydrated } from './helpers';

type Answer = { status: number; body: { kind?: string; jobId?: string; cancelToken?: string; retryAfterSecs?: number; status?: string } };

async function post(request: APIRequestContext): Promise<Answer> {
  const res = await request.post('/api/generate', { data: { prompt: 'spending the budget', steps: 1 } });
  return { status: res.status(), body: await res.json() };
}

/** Cancels a job (by its submitter's token) and waits until it has really ended, so the next
 * submit is not "busy". */
async function cancelAndSettle(request: APIRequestContext, id: string, token: string) {
  const res = await request.delete(`/api/jobs/${id}`, { headers: { 'x-cancel-token': token } });
  expect(res.status()).toBe(200);
  await expect
    .poll(async () => (await (await request.get(`/api/status/${id}`)).json()).status, { timeout: 30_000 })
    .toMatch(/^(completed|failed|cancelled)$/);
}

/**
 * Spends every token: submits (and cancels) until the limiter answers rate_limited with a wait
 * long enough for the page's own submit to land inside it.
 */
async function exhaustBudget(request: APIRequestContext) {
  let limited: Answer | undefined;
  for (let i = 0; i < 40 && !limited; i++) {
    const answer = await post(request);
    if (answer.status === 202) {
      await cancelAndSettle(request, answer.body.jobId!, answer.body.cancelToken!);
    } else if (answer.body.kind === 'rate_limited') {
      expect(answer.status).toBe(429);
      if ((answer.body.retryAfterSecs ?? 0) >= 4) {
        limited = answer;
      } else {
        // A token is about to come back: wait exactly that long (the limiter's own figure),
        // spend it on the next round, and the wait after that is a full period.
        await new Promise((r) => setTimeout(r, (answer.body.retryAfterSecs ?? 1) * 1000 + 250));
      }
    } else {
      // busy: a previous job is still winding down; it spent a token too.
      expect(answer.body.kind).toBe('busy');
    }
  }
  expect(limited, 'the limiter never answered rate_limited').toBeDefined();
}

test('after the budget is spent, the page says so and how long to wait', async ({ page, request }) => {
  await openHydrated(page);
  const ui = find(page);
  await ui.prompt.fill('one picture too many');

  await exhaustBudget(request);

  await ui.generate.click();
  await expect(ui.error).toHaveAttribute('data-error-kind', 'rate_limited');
  await expect(ui.error).toContainText('Too many pictures in a short time');
  await expect(ui.error).toContainText(/wait \d+ s/);
  await expect(page.getByTestId('retry-wait')).toHaveText(/Try again in \d+ s\./);
  await expect(page.getByTestId('retry')).toBeVisible();
  await expect(ui.prompt).toBeEnabled();
  await expect(ui.prompt).toHaveValue('one picture too many');
});

test.describe('without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('a rate-limited post comes back to the page with the wait, not raw JSON', async ({ page, request }) => {
    await page.goto('/');
    const ui = find(page);
    await ui.prompt.fill('one more without scripts');
    await exhaustBudget(request);
    await ui.generate.click();
    await expect(page).toHaveURL(/__err=/);
    await expect(ui.error).toHaveAttribute('data-error-kind', 'rate_limited');
    await expect(ui.error).toContainText(/wait \d+ s/);
    // What was typed is still there to try again with.
    await expect(ui.prompt).toHaveValue('one more without scripts');
  });
});
