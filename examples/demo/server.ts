/**
 * `npm start`: the latchkey demo (Express 5, see app.ts) on http://127.0.0.1:3000 (`PORT` overrides),
 * its attack page on the other loopback name, another site to the browser: http://localhost:3001 (the
 * next port). Sessions in var/demo-sessions.db (var/ is created if missing), or in
 * the store of the URL in `LATCHKEY_STORE` (`redis://…`, `postgres://…`, `file:…`: see docs/stores.md).
 * Keys come from `LATCHKEY_KEYS` (comma- or space-separated, newest first); without it, a development
 * key is generated once into var/demo-keys and reused.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKey } from 'latchkey'
import { createDemoServer } from './app.js'

const VAR_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'var')
const DB_PATH = join(VAR_DIR, 'demo-sessions.db')
const KEY_PATH = join(VAR_DIR, 'demo-keys')

/** The development key in var/demo-keys, created (readable by this user only) on first use. */
function developmentKeys(): string[] {
  const shown = relative(process.cwd(), KEY_PATH)
  try {
    writeFileSync(KEY_PATH, `${generateKey()}\n`, { mode: 0o600, flag: 'wx' })
    console.log(`LATCHKEY_KEYS is not set: using the development key in ${shown} (generated now)`)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    console.log(`LATCHKEY_KEYS is not set: using the development key in ${shown}`)
  }
  return readFileSync(KEY_PATH, 'utf8')
    .split(/[\s,]+/)
    .filter((key) => key !== '')
}

async function main(): Promise<void> {
  const port = process.env.PORT === undefined || process.env.PORT === '' ? 3000 : Number(process.env.PORT)
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new Error(`PORT must be a port number, got ${JSON.stringify(process.env.PORT)}`)
  }
  mkdirSync(VAR_DIR, { recursive: true })
  const keys = process.env.LATCHKEY_KEYS ? undefined : developmentKeys()
  const storeUrl = process.env.LATCHKEY_STORE || undefined
  const demo = await createDemoServer({ storePath: DB_PATH, storeUrl, keys, port })
  console.log(
    `latchkey demo listening on ${demo.url} (sessions in ${storeUrl ? 'LATCHKEY_STORE' : relative(process.cwd(), DB_PATH)})`,
  )
  console.log(`its attack page: ${demo.attackUrl}`)
  const shutdown = (signal: string): void => {
    console.log(`${signal}: shutting down`)
    demo.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error)
        process.exit(1)
      },
    )
  }
  process.once('SIGINT', shutdown)
  process.once('SIGTERM', shutdown)
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error)
  process.exit(1)
})
