// Drives headless Chromium for the suite (tests/browserdriver.py): one JSON command per
// line on stdin, one JSON answer per line on stdout, {id, ok, value} or {id, ok: false,
// error}. Commands: open {page, url, width, height}, eval {page, js} (an expression or
// an async function body's value), wait {page, js, timeout} (until js is truthy),
// choose {page, selector, files: [{name, base64}]} (click what opens a file chooser and
// pick those files in it), reload {page}, screenshot {page, path}, errors {page} (what
// the console said as errors, uncaught exceptions, and responses of 400 or more),
// close {page}, reset (close every page). It ends with its standard input.
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
        // A failed load's message does not name what failed; its location does.
        const where = message.location()?.url;
        if (message.type() === "error") errors.push(where ? `${message.text()} (${where})` : message.text());
      });
      page.on("response", (response) => {
        if (response.status() >= 400) errors.push(`${response.status()} ${response.url()}`);
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
    case "choose": {
      const { page } = pages.get(command.page);
      const chosen = page.waitForEvent("filechooser", { timeout: 10000 });
      const [chooser] = await Promise.all([chosen, page.click(command.selector, { timeout: 10000 })]);
      await chooser.setFiles(command.files.map(({ name, base64 }) => (
        { name, mimeType: "application/octet-stream", buffer: Buffer.from(base64, "base64") }
      )));
      return true;
    }
    case "reload": {
      const { page } = pages.get(command.page);
      await page.reload();
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
    case "reset": {
      // The end of a test: its pages are closed, as if its browser had been.
      const entries = [...pages.values()];
      pages.clear();
      await Promise.all(entries.map(({ context }) => context.close()));
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
