// Drives headless Chromium for the suite (tests/browser.py): one JSON command per line
// on stdin, one JSON answer per line on stdout, {id, ok, value} or {id, ok: false,
// error}. Commands: open {page, url, width, height}, eval {page, js} (an expression or
// an async function body's value), wait {page, js, timeout} (until js is truthy),
// screenshot {page, path}, errors {page}, close {page}. It ends with its standard input.
import { createInterface } from "node:readline";

import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const pages = new Map();
const answer = (reply) => process.stdout.write(`${JSON.stringify(reply)}\n`);

async function run(command) {
  switch (command.cmd) {
    case "open": {
      const context = await browser.newContext({
        viewport: { width: command.width ?? 1100, height: command.height ?? 760 },
        deviceScaleFactor: command.scale ?? 1,
        isMobile: command.mobile ?? false,
        hasTouch: command.mobile ?? false,
      });
      const page = await context.newPage();
      const errors = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      page.on("console", (message) => {
        if (message.type() === "error") errors.push(message.text());
      });
      pages.set(command.page, { page, context, errors });
      await page.goto(command.url);
      return true;
    }
    case "eval": {
      const { page } = pages.get(command.page);
      return await page.evaluate(`(async () => (${command.js}))()`);
    }
    case "wait": {
      const { page } = pages.get(command.page);
      await page.waitForFunction(command.js, null, { timeout: command.timeout ?? 10000, polling: 50 });
      return true;
    }
    case "errors":
      return pages.get(command.page).errors;
    case "screenshot": {
      const { page } = pages.get(command.page);
      await page.screenshot({ path: command.path, fullPage: false });
      return true;
    }
    case "close": {
      const entry = pages.get(command.page);
      pages.delete(command.page);
      await entry.context.close();
      return true;
    }
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

answer({ id: 0, ok: true, value: browser.version() });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  run(command).then(
    (value) => answer({ id: command.id, ok: true, value: value ?? null }),
    (error) => answer({ id: command.id, ok: false, error: String(error?.stack ?? error) }),
  );
}
await browser.close();
