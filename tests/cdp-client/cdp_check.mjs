// Connects to a browser over CDP through lazygate, opens a page, reads its title and takes a
// screenshot. Usage: node cdp_check.mjs <http://gateway/cdp/owner> <page-url> <screenshot.png> <token>
// Prints one JSON line: {"title", "screenshotBytes", "pages"}.
import { chromium } from "playwright-core";

const [endpoint, pageUrl, shotPath, token] = process.argv.slice(2);
const browser = await chromium.connectOverCDP(endpoint, {
  timeout: 60_000,
  headers: { Authorization: `Bearer ${token}` },
});
try {
  const context = browser.contexts()[0] ?? (await browser.newContext());
  const page = await context.newPage();
  await page.goto(pageUrl);
  const title = await page.title();
  const shot = await page.screenshot({ path: shotPath });
  const pages = context.pages().length;
  await page.close();
  console.log(JSON.stringify({ title, screenshotBytes: shot.length, pages }));
} finally {
  await browser.close();
}
