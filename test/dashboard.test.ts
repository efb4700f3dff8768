// End-to-end: the dashboard page of the real gobalancer process in real headless Chromium
// (Debian's `chromium`, driven by playwright-core; nothing is downloaded).
//
// GOBALANCER_SCREENSHOT=docs/dashboard.png also runs a minute of varied traffic and saves
// a screenshot of the page there (for the README).
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import type { BackendJson } from "../src/api/schemas.ts";
import { ensureDebianPackages } from "./apt.ts";
import { BalancerProcess, REPO, cleanup, request, startBalancer, startEchoBackend, waitFor, type TestServer } from "./harness.ts";

const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOT = process.env.GOBALANCER_SCREENSHOT;

/** Installs Debian's chromium when it is missing (as test/docker/engine.ts does for Docker). */
function ensureChromium(): void {
  ensureDebianPackages(["chromium"], "the dashboard test");
  if (!existsSync(CHROMIUM)) throw new Error(`chromium is installed but ${CHROMIUM} is missing`);
}

async function api<T>(lb: BalancerProcess, method: string, path: string, token?: string): Promise<{ status: number; body: T }> {
  const res = await fetch(`${lb.api}${path}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await res.text();
  return { status: res.status, body: (text && res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text) as T };
}

async function backends(lb: BalancerProcess, token?: string): Promise<BackendJson[]> {
  const res = await api<BackendJson[]>(lb, "GET", "/backends", token);
  assert.equal(res.status, 200);
  return res.body;
}

const row = (page: Page, address: string) => page.locator(`tr[data-address="${address}"]`);
const cellText = (page: Page, address: string, label: string) => row(page, address).locator(`td[data-label="${label}"]`).innerText();

describe("dashboard page", () => {
  let browser: Browser;
  const pageErrors: string[] = [];

  before(
    async () => {
      ensureChromium();
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
    },
    { timeout: 300_000 },
  );
  after(async () => {
    await browser?.close();
    await cleanup();
  });

  /** The dashboard in a new page; `beforeLoad` runs first (an init script, say). */
  async function open(lb: BalancerProcess, width = 1280, beforeLoad?: (page: Page) => Promise<unknown>): Promise<Page> {
    const page = await browser.newPage({ viewport: { width, height: 900 } });
    page.on("pageerror", (err) => pageErrors.push(err.message));
    // Any request that leaves the API's origin fails the test: the page must be self-contained.
    page.on("request", (req) => {
      if (!req.url().startsWith(lb.api) && !req.url().startsWith("data:")) pageErrors.push(`request outside the API: ${req.url()}`);
    });
    await beforeLoad?.(page);
    await page.goto(`${lb.api}/`);
    return page;
  }

  it("lists the backends, adds one, changes a weight, removes one, and counts traffic", { timeout: SCREENSHOT ? 180_000 : 60_000 }, async () => {
    const echoes: TestServer[] = await Promise.all([startEchoBackend(), startEchoBackend(), startEchoBackend()]);
    const [one, two, three] = echoes as [TestServer, TestServer, TestServer];
    const lb = await startBalancer({
      health_check: { interval: "1s" },
      discovery: { type: "static", backends: [{ address: one.address, weight: 1 }, { address: two.address, weight: 2 }] },
    });
    const page = await open(lb);

    // Every backend from GET /backends is in the table, with its status.
    await row(page, one.address).waitFor();
    await row(page, two.address).waitFor();
    assert.match(await cellText(page, one.address, "Status"), /up/);
    assert.match(await cellText(page, two.address, "Backend"), /static/);

    // Add through the form: the row appears and the API has it.
    await page.fill("#add-address", three.address);
    await page.fill("#add-weight", "3");
    await page.click("#add-button");
    await row(page, three.address).waitFor();
    const added = (await backends(lb)).find((b) => b.address === three.address);
    assert.equal(added?.weight, 3);
    assert.equal(added?.source, "api");

    // The API's errors reach the user: adding it again is a 409 with a message.
    await page.fill("#add-address", three.address);
    await page.click("#add-button");
    await waitFor(async () => /already exists/.test(await page.locator("#notice.error").innerText()), 5000, "the 409 message on the page");

    // A weight change from the row's form takes effect.
    const weight = row(page, one.address).locator(".weight input");
    await weight.fill("7");
    await row(page, one.address).locator(".weight button").click();
    await waitFor(async () => (await backends(lb)).find((b) => b.address === one.address)?.weight === 7, 5000, "weight 7 in GET /backends");

    // Drain from the row's control: the backend is draining in GET /backends and on the
    // page, and ready brings it back.
    await row(page, two.address).locator('button[data-state="drain"]').click();
    await waitFor(async () => (await backends(lb)).find((b) => b.address === two.address)?.status === "draining", 5000, "draining in GET /backends");
    await waitFor(async () => (await row(page, two.address).locator('button[data-state="drain"]').getAttribute("aria-pressed")) === "true", 5000, "drain shown as set");
    await waitFor(async () => /draining/.test(await row(page, two.address).locator(".pill").innerText()), 5000, "the draining pill");
    assert.equal(await row(page, two.address).locator('td[data-label="Admin state"] button[aria-pressed="true"]').innerText(), "Drain", "the admin state column");
    // While draining, new connections go to the others only.
    const totalOf = async (address: string) => (await backends(lb)).find((b) => b.address === address)!.total_connections;
    const twoBefore = await totalOf(two.address);
    for (let i = 0; i < 6; i++) assert.equal(await request(lb.port, `drained ${i}`), `drained ${i}`);
    assert.equal(await totalOf(two.address), twoBefore, "no new connection to the drained backend");
    await row(page, two.address).locator('button[data-state="ready"]').click();
    await waitFor(async () => (await backends(lb)).find((b) => b.address === two.address)?.status === "up", 5000, "up again in GET /backends");

    // Counts rise after traffic through the balancer (36: the 6 sent while draining too).
    for (let i = 0; i < 30; i++) assert.equal(await request(lb.port, `hello ${i}`), `hello ${i}`);
    await waitFor(
      async () => {
        let total = 0;
        for (const b of echoes) total += Number((await cellText(page, b.address, "Total")).replace(/\D/g, ""));
        return total === 36;
      },
      6000,
      "36 connections counted in the table",
    );
    await waitFor(async () => Number((await page.locator("#tile-total").innerText()).replace(/\D/g, "")) >= 36, 6000, "accepted connections tile");
    await waitFor(async () => /[1-9]/.test(await page.locator("#tile-cps").innerText()), 6000, "a connections/s figure");
    await waitFor(async () => /[1-9]/.test(await page.locator("#tile-bps").innerText()), 6000, "a bytes/s figure");

    // The charts open with the server's samples: history needs the token like the rest of the API.
    const history = await api<{ samples: unknown[] }>(lb, "GET", "/dashboard/history.json");
    assert.equal(history.status, 200);
    assert.ok(history.body.samples.length >= 1);

    // Removing an API backend takes two clicks (the second confirms).
    const remove = row(page, three.address).getByRole("button", { name: `Remove ${three.address}` });
    await remove.click();
    await remove.click();
    await row(page, three.address).waitFor({ state: "detached" });
    assert.equal((await backends(lb)).some((b) => b.address === three.address), false);

    if (SCREENSHOT) {
      // A few minutes' worth of shape in a minute: bursts of different sizes.
      await fetch(`${lb.api}/backends`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ address: three.address, weight: 2 }) });
      const payload = "x".repeat(64 * 1024);
      const until = Date.now() + 60_000;
      const load = (async () => {
        for (let round = 0; Date.now() < until; round++) {
          const burst = 5 + Math.round(20 * (1 + Math.sin(round / 6)));
          await Promise.all(Array.from({ length: burst }, () => request(lb.port, payload)));
          await new Promise((r) => setTimeout(r, 300));
        }
      })();
      // Taken while traffic still flows, so the live figures are not zero.
      await new Promise((r) => setTimeout(r, until - Date.now() - 3000));
      await page.mouse.move(0, 0);
      await page.screenshot({ path: path.resolve(REPO, SCREENSHOT), fullPage: true });
      await load;
    }

    // A narrow window shows each backend as a card, still with every value.
    await page.setViewportSize({ width: 400, height: 800 });
    assert.match(await cellText(page, one.address, "Bytes out"), /\d/);
    assert.ok(await row(page, one.address).locator('td[data-label="Weight"]').isVisible());
    await page.close();
    assert.deepEqual(pageErrors, []);
  });

  it("keeps the charts live when the browser's clock is behind the server's", { timeout: 30_000 }, async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ discovery: { type: "static", backends: [{ address: echo.address }] } });
    const page = await open(lb, 1280, (p) =>
      p.addInitScript(() => {
        const real = Date.now;
        Date.now = () => real() - 10 * 60_000;
      }),
    );
    await row(page, echo.address).waitFor();
    for (let i = 0; i < 12; i++) assert.equal(await request(lb.port, `late ${i}`), `late ${i}`);
    await waitFor(async () => Number((await page.locator("#tile-total").innerText()).replace(/\D/g, "")) === 12, 6000, "12 accepted, from a live sample");
    await page.close();
    assert.deepEqual(pageErrors, []);
  });

  it("asks for the token, refuses a wrong one, and works with the right one", { timeout: 30_000 }, async () => {
    const echo = await startEchoBackend();
    const token = "dashboard-test-token";
    const lb = await startBalancer({
      health_check: { interval: "10m" },
      api: { token },
      discovery: { type: "static", backends: [{ address: echo.address, weight: 1 }] },
    });
    // The page loads without a token; the data does not.
    assert.equal((await api(lb, "GET", "/")).status, 200);
    assert.equal((await api(lb, "GET", "/dashboard/assets/uplot.js")).status, 200);
    assert.equal((await api(lb, "GET", "/dashboard/history.json")).status, 401);
    assert.equal((await api(lb, "GET", "/dashboard/history.json", token)).status, 200);

    const page = await open(lb);
    await page.locator("#auth").waitFor({ state: "visible" });
    await page.fill("#auth-token", "wrong");
    await page.click("#auth-form button");
    await waitFor(async () => /refused/.test(await page.locator("#auth-error").innerText()), 5000, "the refusal message");
    assert.ok(await page.locator("#auth").isVisible());
    assert.equal(await row(page, echo.address).count(), 0);

    await page.fill("#auth-token", token);
    await page.click("#auth-form button");
    await row(page, echo.address).waitFor();
    assert.ok(await page.locator("#auth").isHidden());
    assert.equal(await page.evaluate('sessionStorage.getItem("gobalancer.api-token")'), token);

    // The token goes on every call: a change from the page works.
    const weight = row(page, echo.address).locator(".weight input");
    await weight.fill("4");
    await row(page, echo.address).locator(".weight button").click();
    await waitFor(async () => (await backends(lb, token))[0]?.weight === 4, 5000, "weight 4 in GET /backends");

    // A reload in the same tab keeps the token: no prompt.
    await page.reload();
    await row(page, echo.address).waitFor();
    assert.ok(await page.locator("#auth").isHidden());
    await page.close();
    assert.deepEqual(pageErrors, []);
  });
});
