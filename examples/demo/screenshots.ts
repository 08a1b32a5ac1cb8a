/**
 * `npm run screenshots`: a tour of the demo in headless Chromium, one PNG per page in
 * docs/screenshots/ (shown by docs/demo.md and README.md). The demo runs on port 0 with a throwaway
 * SQLite file and key, and a manual clock, moved to show the "confirm your password" page and the least
 * recently used device without waiting. The browser opens it at the URL `npm start` prints
 * (http://127.0.0.1:PORT), so its attack page is on localhost. Each picture is written as a palette PNG
 * (png.ts), a third of Chromium's size.
 * Chromium: `/usr/bin/chromium` (`LATCHKEY_CHROMIUM` overrides), driven by playwright-core.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKey, ManualClock } from 'latchkey'
import type { Page } from 'playwright-core'
import { chromium } from 'playwright-core'
import { createDemoServer } from './app.js'
import { CHROMIUM, CHROMIUM_ARGS } from './chromium.js'
import { toPalettePng } from './png.js'

const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'screenshots')

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-screenshots-'))
  const clock = new ManualClock(Date.now())
  const demo = await createDemoServer({
    storePath: join(dir, 'sessions.db'),
    keys: [generateKey()],
    port: 0,
    host: '127.0.0.1',
    clock,
  })
  const url = demo.url
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  mkdirSync(OUT, { recursive: true })
  const shoot = async (page: Page, name: string) => {
    const path = join(OUT, `${name}.png`)
    writeFileSync(path, toPalettePng(await page.screenshot({ fullPage: true })))
    console.log(relative(process.cwd(), path))
  }
  try {
    const viewport = { width: 860, height: 420 }
    const device = async (name: string) =>
      (await browser.newContext({ viewport, userAgent: `${name} (Chromium)` })).newPage()
    const laptop = await device('Laptop')
    const phone = await device('Phone')
    const signIn = async (page: Page) => {
      await page.goto(`${url}/`)
      await page.fill('#name', 'ada')
      await page.fill('#password', 'correct horse')
      await page.click('#sign-in')
      await page.locator('.flash', { hasText: 'Welcome, ada.' }).waitFor()
    }
    await laptop.goto(`${url}/`)
    await shoot(laptop, '1-visitor')
    await signIn(phone)
    await signIn(laptop)
    await laptop.click('#add-form')
    await laptop.locator('#count', { hasText: '1' }).waitFor()
    await shoot(laptop, '2-signed-in')
    await laptop.click('tr[data-session="other"] .revoke')
    await laptop.locator('.flash', { hasText: 'Session revoked.' }).waitFor()
    await phone.goto(`${url}/`)
    await phone.locator('#ended').waitFor()
    await shoot(phone, '3-revoked-device')
    clock.advance(6 * 60_000)
    await laptop.goto(`${url}/password`)
    await laptop.locator('#fresh-auth[data-state="required"]').waitFor()
    await shoot(laptop, '4-confirm-password')
    await laptop.fill('#confirm-password', 'correct horse')
    await Promise.all([laptop.waitForURL(`${url}/password`), laptop.click('#confirm')])
    await laptop.locator('#fresh-auth[data-state="fresh"]').waitFor()
    await shoot(laptop, '5-change-password')
    await laptop.goto(`${url}/`)
    await laptop.click('#attack-link')
    await laptop.locator('#attacks[data-done="1"]').waitFor()
    await shoot(laptop, '6-attack')
    // The cap: three devices, the laptop used again after the touch interval, then a fourth sign-in
    // ends the phone, the least recently used.
    clock.advance(60_000)
    await signIn(phone)
    clock.advance(60_000)
    await signIn(await device('Tablet'))
    clock.advance(demo.manager.options.touchIntervalMs + 60_000)
    await laptop.goto(`${url}/`)
    await laptop.goto(`${url}/`)
    const desktop = await device('Desktop')
    await signIn(desktop)
    await desktop.locator('#cap[data-count="3"]').waitFor()
    await shoot(desktop, '7-session-cap')
    // The counters of it all, as the OpenTelemetry SDK collected them.
    const operator = await device('Operator')
    await operator.goto(`${url}/metrics`)
    await shoot(operator, '8-metrics')
  } finally {
    await browser.close()
    await demo.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
