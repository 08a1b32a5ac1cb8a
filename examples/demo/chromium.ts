/** Headless Chromium for the screenshots and the browser test: Debian's, driven by playwright-core. */

/** The browser: `LATCHKEY_CHROMIUM`, else Debian's `/usr/bin/chromium`. */
export const CHROMIUM = process.env.LATCHKEY_CHROMIUM ?? '/usr/bin/chromium'

/** Its flags: headless, and nothing that reaches out to the network on its own. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]
