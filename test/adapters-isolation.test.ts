/**
 * Importing one adapter never loads another framework (nor its own: the adapters use the framework's
 * types only, except Fastify's, which needs fastify-plugin). Checked in a fresh process, with a module
 * resolution hook that reports every module loaded, one entry point after the other.
 */
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { expect, test } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href

const HOOK = `
let port
export function initialize(data) { port = data.port }
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context)
  port.postMessage(resolved.url)
  return resolved
}`

const CHILD = `
import { createRequire, register } from 'node:module'
import { pathToFileURL } from 'node:url'
import { MessageChannel } from 'node:worker_threads'
const { port1, port2 } = new MessageChannel()
const seen = []
port1.on('message', (url) => seen.push(url))
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(HOOK)}), {
  data: { port: port2 },
  transferList: [port2],
})
const FRAMEWORK = /\\/node_modules\\/((?:@hono\\/)?[^/@]+|@koa\\/[^/]+|@fastify\\/[^/]+)\\//
const loaded = {}
// Drivers loaded with require() (createRequire) do not pass the resolve hook: node's CommonJS cache has them.
const cjs = createRequire(import.meta.url).cache
for (const entry of JSON.parse(process.argv[1])) {
  seen.length = 0
  const before = new Set(Object.keys(cjs))
  await import(new URL(entry, ${JSON.stringify(pathToFileURL(root).href)}).href)
  await new Promise((resolve) => setTimeout(resolve, 100))
  for (const file of Object.keys(cjs)) if (!before.has(file)) seen.push(pathToFileURL(file).href)
  const packages = new Set()
  for (const url of seen) {
    const match = FRAMEWORK.exec(url)
    if (match && /^(express|fastify|fastify-plugin|hono|@hono\\/|koa|@koa\\/|@fastify\\/)/.test(match[1])) packages.add(match[1])
  }
  loaded[entry] = [...packages].sort()
}
port1.close()
console.log(JSON.stringify(loaded))
`

test('each adapter loads no framework but its own runtime needs', async () => {
  const entries = [
    'src/index.ts',
    'src/testing/index.ts',
    'src/adapters/node.ts',
    'src/adapters/express.ts',
    'src/adapters/express-augment.ts',
    'src/adapters/hono.ts',
    'src/adapters/koa.ts',
    'src/adapters/fastify.ts',
  ]
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', tsx, '--input-type=module', '-e', CHILD, JSON.stringify(entries)],
    { cwd: root },
  )
  expect(JSON.parse(stdout)).toEqual({
    'src/index.ts': [],
    'src/testing/index.ts': [],
    'src/adapters/node.ts': [],
    'src/adapters/express.ts': [],
    'src/adapters/express-augment.ts': [],
    'src/adapters/hono.ts': [],
    'src/adapters/koa.ts': [],
    'src/adapters/fastify.ts': ['fastify-plugin'],
  })
})
