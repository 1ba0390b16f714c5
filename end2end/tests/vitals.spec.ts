// Core Web Vitals of a first visit, measured in Chromium on a throttled phone-like profile:
// the CPU slowed 4x and DevTools' "Slow 4G" network (562.5 ms round trips, about 1.4 Mbit/s
// down). Prints LCP, CLS and total blocking time, and holds them to budgets set from
// measurements on these machines (LCP within Google's "good" 2.5 s).
import { test, expect } from '@playwright/test';

// Measured here (2 cores): FCP = LCP 1.4 s, CLS 0, TBT 0 ms (no task over 50 ms), hydrated at
// 2.7 s with the 94 kB page (4.6 s with the 222 kB one, 7.0 s with the 394 kB one before islands:
// most of it is the bundle over 1.4 Mbit/s). Budgets leave room for a loaded CI machine.
const BUDGET = {
  lcpMs: 2500,
  cls: 0,
  // Long tasks past 50 ms, summed from first contentful paint until the page is interactive.
  tbtMs: 400,
  // Until the WASM has taken over (the form works without it, as a plain HTML form).
  hydratedMs: 5_000,
};

type Vitals = { fcp: number; lcp: number; cls: number; tbt: number; hydrated: number; longTasks: number[] };

test('a first visit on a slow phone: LCP, CLS and total blocking time within budget', async ({ page, context }) => {
  // Collected from the very start of the document, before any of the page's scripts run.
  await page.addInitScript(() => {
    const w = window as unknown as { __vitals: { lcp: number; cls: number; tasks: { start: number; duration: number }[] } };
    w.__vitals = { lcp: 0, cls: 0, tasks: [] };
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) w.__vitals.lcp = Math.max(w.__vitals.lcp, e.startTime);
    }).observe({ type: 'largest-contentful-paint', buffered: true });
    new PerformanceObserver((list) => {
      for (const e of list.getEntries() as (PerformanceEntry & { value: number; hadRecentInput: boolean })[]) {
        if (!e.hadRecentInput) w.__vitals.cls += e.value;
      }
    }).observe({ type: 'layout-shift', buffered: true });
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) w.__vitals.tasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: 'longtask', buffered: true });
  });

  const cdp = await context.newCDPSession(page);
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: 4 });
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 562.5,
    downloadThroughput: (1.44 * 1024 * 1024) / 8,
    uploadThroughput: (0.675 * 1024 * 1024) / 8,
  });

  await page.goto('/', { waitUntil: 'commit' });
  await expect(page.locator('body[data-hydrated="true"]')).toBeAttached({ timeout: 60_000 });
  const hydrated = await page.evaluate(() => performance.now());
  // A quiet second after hydration: late long tasks and shifts are counted too.
  await page.waitForTimeout(1000);

  const vitals: Vitals = await page.evaluate((hydratedAt) => {
    const w = window as unknown as { __vitals: { lcp: number; cls: number; tasks: { start: number; duration: number }[] } };
    const fcp = performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? 0;
    const after = w.__vitals.tasks.filter((t) => t.start + t.duration > fcp);
    const tbt = after.reduce((sum, t) => sum + Math.max(0, t.duration - 50), 0);
    return { fcp, lcp: w.__vitals.lcp, cls: w.__vitals.cls, tbt, hydrated: hydratedAt, longTasks: after.map((t) => Math.round(t.duration)) };
  }, hydrated);

  console.log(
    `web vitals (4x CPU, slow 4G): FCP ${Math.round(vitals.fcp)} ms, LCP ${Math.round(vitals.lcp)} ms, ` +
      `CLS ${vitals.cls.toFixed(3)}, TBT ${Math.round(vitals.tbt)} ms, hydrated at ${Math.round(vitals.hydrated)} ms, ` +
      `long tasks [${vitals.longTasks.join(', ')}] ms`,
  );
  expect(vitals.fcp).toBeGreaterThan(0);
  expect(vitals.lcp).toBeGreaterThan(0);
  expect(vitals.lcp).toBeLessThanOrEqual(BUDGET.lcpMs);
  expect(vitals.cls).toBeLessThanOrEqual(BUDGET.cls);
  expect(vitals.tbt).toBeLessThanOrEqual(BUDGET.tbtMs);
  expect(vitals.hydrated).toBeLessThanOrEqual(BUDGET.hydratedMs);
});
