// The package as a stranger gets it. A copy of the repository without dist (what a fresh clone holds)
// is packed with `npm pack`, which must build it (prepack); the tarball is installed with npm into a
// scratch ESM project and a scratch CommonJS project, with the drivers and frameworks it names as peers,
// and a small app in each uses every subpath of the exports map; TypeScript checks both module systems.
// A third project installs the tarball alone: every store names its missing driver and how to install
// it. npm works from the local cache (--prefer-offline); better-sqlite3's native addon is taken from
// this repository's own install (same version, same Node) instead of being compiled again.
import { execFile, spawn } from 'node:child_process'
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { ROOT } from './support/cli.js'

const exec = promisify(execFile)
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const DRIVERS = ['better-sqlite3', 'pg', 'mysql2', 'redis']

/** Runtime exports each subpath must have (subpaths not listed here must import, whatever they export). */
const EXPECTED: Record<string, string[]> = {
  latchkey: [
    'createSessionManager',
    'generateKey',
    'ConfigError',
    'StoreError',
    'MemoryStore',
    'SessionManager',
  ],
  'latchkey/node': ['withSessions'],
  'latchkey/stores': ['openStore', 'maskStoreUrl', 'STORE_SCHEMES'],
  'latchkey/stores/sqlite': ['SqliteStore'],
  'latchkey/stores/file': ['FileStore'],
  'latchkey/stores/postgres': ['PostgresStore'],
  'latchkey/stores/mysql': ['MySqlStore'],
  'latchkey/stores/redis': ['RedisStore'],
  'latchkey/testing': ['defineStoreConformance', 'ManualClock'],
  'latchkey/express': ['sessions'],
  'latchkey/fastify': ['latchkey'],
  'latchkey/hono': ['sessions'],
  'latchkey/koa': ['sessions'],
  'latchkey/express-session': ['Store', 'MemoryStore', 'Cookie', 'Session'],
}

interface Manifest {
  name: string
  version: string
  type: string
  bin: Record<string, string>
  engines: { node: string }
  sideEffects: unknown
  exports: Record<string, string | Record<string, string>>
  peerDependencies: Record<string, string>
}

let work: string
let tarball: string
let files: string[]
let manifest: Manifest
let subpaths: string[]
const timings: Record<string, number> = {}

async function timed<T>(label: string, task: () => Promise<T>): Promise<T> {
  const started = performance.now()
  try {
    return await task()
  } finally {
    timings[label] = Math.round(performance.now() - started)
  }
}

/** The version of `name` this repository has installed, so that npm finds it in its cache. */
function installedVersion(name: string): string {
  return (
    JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }
  ).version
}

async function npmInstall(dir: string, type: 'module' | 'commonjs', packages: string[]): Promise<void> {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `scratch-${type}`, private: true, type }))
  await exec(
    NPM,
    [
      'install',
      '--prefer-offline',
      '--ignore-scripts',
      '--no-audit',
      '--no-fund',
      '--loglevel=error',
      tarball,
      ...packages,
    ],
    { cwd: dir, maxBuffer: 16 * 1024 * 1024 },
  )
  if (packages.some((spec) => spec.startsWith('better-sqlite3@'))) {
    const release = join(dir, 'node_modules', 'better-sqlite3', 'build', 'Release')
    mkdirSync(release, { recursive: true })
    cpSync(
      join(ROOT, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node'),
      join(release, 'better_sqlite3.node'),
    )
  }
}

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function run(command: string, args: string[], cwd: string, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk
    })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

/**
 * The app both projects run, written once: `load` is `import()` in the ESM project and `require` in the
 * CommonJS one, so every module (latchkey's subpaths, the frameworks, node's) comes through the
 * project's own module system. It prints one JSON report.
 */
const SCENARIO = `
async function scenario(load, subpaths, expected, dir) {
  const report = { subpaths: {}, visits: {} }
  const mods = {}
  for (const subpath of subpaths) {
    const mod = await load(subpath)
    mods[subpath] = mod
    const missing = (expected[subpath] || []).filter((name) => mod[name] === undefined)
    report.subpaths[subpath] = missing.length === 0 ? 'ok' : 'missing ' + missing.join(', ')
  }
  const { createSessionManager, generateKey, MemoryStore } = mods['latchkey']
  const keys = [generateKey()]
  const manager = (store) => createSessionManager({ store, keys, cookie: { secure: false } })
  const count = (session) => String(session.update('visits', (n = 0) => n + 1))
  // Two requests, the second with the cookie of the first: the count must go 1, 2.
  async function twice(name, request) {
    const first = await request(undefined)
    const cookie = first.cookie && first.cookie.split(';')[0]
    const second = await request(cookie)
    report.visits[name] = [first.body, second.body]
  }
  const http = await load('node:http')
  async function overHttp(name, handler, close) {
    const server = http.createServer(handler)
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
    const url = 'http://127.0.0.1:' + server.address().port + '/'
    await twice(name, async (cookie) => {
      const response = await fetch(url, { headers: cookie ? { cookie } : {} })
      return { body: await response.text(), cookie: response.headers.get('set-cookie') }
    })
    await new Promise((resolve) => server.close(resolve))
    if (close) await close()
  }

  // node:http with SQLite, the Quick start's pair.
  const { SqliteStore } = mods['latchkey/stores/sqlite']
  const sqlite = manager(new SqliteStore({ path: dir + '/sessions.db' }))
  const { withSessions } = mods['latchkey/node']
  await overHttp('node+sqlite', withSessions(sqlite, async (req, res, session) => res.end(count(session))), () => sqlite.close())

  // Every store from a URL; the network ones only constructed and closed (no server needed).
  const { openStore } = mods['latchkey/stores']
  const file = await openStore('file:' + dir + '/sessions')
  report.file = await file.count()
  await file.close()
  const { PostgresStore } = mods['latchkey/stores/postgres']
  const { MySqlStore } = mods['latchkey/stores/mysql']
  const { RedisStore } = mods['latchkey/stores/redis']
  for (const store of [
    new PostgresStore({ connectionString: 'postgres://nobody@127.0.0.1:1/none' }),
    new MySqlStore({ uri: 'mysql://nobody@127.0.0.1:1/none' }),
    new RedisStore({ url: 'redis://127.0.0.1:1' }),
  ]) await store.close()

  // The framework adapters present in the exports map.
  const def = (mod) => (mod && mod.default) || mod
  if (mods['latchkey/express']) {
    const express = def(await load('express'))
    const app = express()
    const m = manager(new MemoryStore())
    app.use(mods['latchkey/express'].sessions(m))
    app.get('/', (req, res) => res.send(count(req.session)))
    await overHttp('express', app)
  }
  if (mods['latchkey/express-session']) {
    // The drop-in is the middleware factory itself, as express-session is: require() gives the function.
    const express = def(await load('express'))
    const session = def(mods['latchkey/express-session'])
    report.dropInIsFactory = typeof session === 'function'
    const app = express()
    app.use(session({ secret: 'pack test secret', store: new session.MemoryStore(), cookie: { secure: false } }))
    app.get('/', (req, res) => {
      req.session.visits = (req.session.visits || 0) + 1
      res.send(String(req.session.visits))
    })
    await overHttp('express-session', app)
  }
  if (mods['latchkey/koa']) {
    const Koa = def(await load('koa'))
    const app = new Koa()
    app.use(mods['latchkey/koa'].sessions(manager(new MemoryStore())))
    app.use((ctx) => {
      ctx.body = count(ctx.session)
    })
    await overHttp('koa', app.callback())
  }
  if (mods['latchkey/hono']) {
    const { Hono } = await load('hono')
    const app = new Hono()
    app.use(mods['latchkey/hono'].sessions(manager(new MemoryStore())))
    app.get('/', (c) => c.text(count(c.get('session'))))
    await twice('hono', async (cookie) => {
      const response = await app.fetch(new Request('http://localhost/', { headers: cookie ? { cookie } : {} }))
      return { body: await response.text(), cookie: response.headers.get('set-cookie') }
    })
  }
  if (mods['latchkey/fastify']) {
    const fastify = def(await load('fastify'))
    const app = fastify()
    await app.register(mods['latchkey/fastify'].latchkey, { manager: manager(new MemoryStore()) })
    app.get('/', async (request) => count(request.session))
    await twice('fastify', async (cookie) => {
      const response = await app.inject({ method: 'GET', url: '/', headers: cookie ? { cookie } : {} })
      const setCookie = response.headers['set-cookie']
      return { body: response.body, cookie: Array.isArray(setCookie) ? setCookie[0] : setCookie }
    })
    await app.close()
  }
  return report
}
`

function appSource(system: 'esm' | 'cjs'): string {
  const args = `${JSON.stringify(subpaths)}, ${JSON.stringify(EXPECTED)}, process.cwd()`
  return system === 'esm'
    ? `${SCENARIO}\nconsole.log(JSON.stringify(await scenario((id) => import(id), ${args})))\n`
    : `'use strict'\n${SCENARIO}\nscenario(async (id) => require(id), ${args}).then((r) => console.log(JSON.stringify(r)), (e) => { console.error(e); process.exit(1) })\n`
}

/** Every subpath, a type from it and a call, for tsc: `import` (ESM) or `import = require` (CommonJS). */
function typesSource(system: 'esm' | 'cjs'): string {
  const lines: string[] = []
  subpaths.forEach((subpath, i) => {
    lines.push(
      system === 'esm' ? `import * as m${i} from '${subpath}'` : `import m${i} = require('${subpath}')`,
    )
  })
  lines.push(
    `const manager: m0.SessionManager<{ visits: number }> = m0.createSessionManager<{ visits: number }>({ store: new m0.MemoryStore(), keys: [m0.generateKey()] })`,
    `const visits: number | undefined = (null as unknown as m0.Session<{ visits: number }>).get('visits')`,
    `console.log(${subpaths.map((_, i) => `m${i}`).join(', ')}, manager, visits)`,
  )
  return `${lines.join('\n')}\n`
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'latchkey-pack-'))
  // What a fresh clone holds (no dist), with this repository's dependencies for the build.
  const stage = join(work, 'clone')
  mkdirSync(stage)
  for (const entry of [
    'package.json',
    'tsconfig.json',
    'tsconfig.build.json',
    'src',
    'README.md',
    'LICENSE',
    'CHANGELOG.md',
    'docs',
  ]) {
    if (existsSync(join(ROOT, entry))) cpSync(join(ROOT, entry), join(stage, entry), { recursive: true })
  }
  symlinkSync(join(ROOT, 'node_modules'), join(stage, 'node_modules'), 'dir')
  await timed('npm pack (prepack builds)', () =>
    exec(NPM, ['pack', '--pack-destination', work, '--loglevel=error'], {
      cwd: stage,
      maxBuffer: 16 * 1024 * 1024,
    }),
  )
  tarball = join(work, `latchkey-${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version}.tgz`)
  files = (await exec('tar', ['-tzf', tarball])).stdout
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ''))
  await exec('tar', ['-xzf', tarball, '-C', work])
  manifest = JSON.parse(readFileSync(join(work, 'package', 'package.json'), 'utf8')) as Manifest
  subpaths = Object.keys(manifest.exports)
    .filter((subpath) => subpath !== './package.json')
    .map((subpath) => (subpath === '.' ? 'latchkey' : `latchkey/${subpath.slice(2)}`))
  const peers = Object.keys(manifest.peerDependencies ?? {}).map(
    (name) => `${name}@${installedVersion(name)}`,
  )
  await timed('npm install x3 (side by side)', () =>
    Promise.all([
      npmInstall(join(work, 'esm'), 'module', peers),
      npmInstall(join(work, 'cjs'), 'commonjs', peers),
      npmInstall(join(work, 'bare'), 'module', []),
    ]),
  )
}, 600_000)

afterAll(() => {
  console.info(`pack test timings (ms): ${JSON.stringify(timings)}`)
  if (work) rmSync(work, { recursive: true, force: true })
})

describe('the package', () => {
  test('npm pack builds a complete package: dist with types for every export, the CLI, LICENSE, docs; no maps, sources or tests', () => {
    expect(files).toContain('LICENSE')
    expect(files).toContain('README.md')
    expect(files).toContain('CHANGELOG.md')
    expect(files.some((file) => file.startsWith('docs/'))).toBe(true)
    for (const [subpath, target] of Object.entries(manifest.exports)) {
      if (typeof target === 'string') continue
      expect(Object.keys(target), subpath).toEqual(expect.arrayContaining(['types', 'import', 'require']))
      expect(Object.keys(target)[0], `${subpath}: "types" comes first`).toBe('types')
      for (const file of Object.values(target))
        expect(files, `${subpath} -> ${file}`).toContain(file.replace(/^\.\//, ''))
    }
    expect(files).toContain(manifest.bin.latchkey!.replace(/^\.\//, ''))
    expect(files.filter((file) => file.endsWith('.map'))).toEqual([])
    // Nor a reference to one: a source map comment would point at a file the package does not have.
    const mapped = files.filter(
      (file) =>
        /\.(js|d\.ts)$/.test(file) &&
        readFileSync(join(work, 'package', file), 'utf8').includes('sourceMappingURL'),
    )
    expect(mapped).toEqual([])
    expect(files.filter((file) => /\.test\.|^src\/|^test\//.test(file))).toEqual([])
    expect(files.filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))).toEqual([])
    expect(
      files.every((file) => /^(dist\/|docs\/|LICENSE$|README\.md$|CHANGELOG\.md$|package\.json$)/.test(file)),
    ).toBe(true)
    expect(manifest.sideEffects).toBe(false)
    expect(manifest.engines.node).toBe('>=20.19')
    expect(readFileSync(join(ROOT, 'LICENSE'), 'utf8')).toContain('latchkey contributors')
  })

  for (const system of ['esm', 'cjs'] as const) {
    test(`${system === 'esm' ? 'ESM' : 'CommonJS'} project: every subpath export loads, and an app on each adapter and store runs`, async () => {
      const dir = join(work, system)
      const file = join(dir, system === 'esm' ? 'app.mjs' : 'app.cjs')
      writeFileSync(file, appSource(system))
      const result = await timed(`${system} app`, () => run(process.execPath, [file], dir))
      expect(result.code, result.stderr).toBe(0)
      const report = JSON.parse(result.stdout.trim().split('\n').pop() as string)
      expect(Object.keys(report.subpaths).sort()).toEqual([...subpaths].sort())
      for (const subpath of subpaths) expect(report.subpaths[subpath], subpath).toBe('ok')
      for (const [name, visits] of Object.entries(report.visits)) expect(visits, name).toEqual(['1', '2'])
      expect(Object.keys(report.visits)).toContain('node+sqlite')
      for (const adapter of ['express', 'fastify', 'hono', 'koa', 'express-session']) {
        if (subpaths.includes(`latchkey/${adapter}`)) expect(Object.keys(report.visits)).toContain(adapter)
      }
      expect(report.dropInIsFactory).toBe(true)
      expect(report.file).toBe(0)
    }, 120_000)

    test(`${system === 'esm' ? 'ESM' : 'CommonJS'} project: TypeScript (module nodenext) accepts every subpath`, async () => {
      const dir = join(work, system)
      const file = join(dir, system === 'esm' ? 'types.mts' : 'types.cts')
      writeFileSync(file, typesSource(system))
      const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
      const args = [
        '--noEmit',
        '--strict',
        '--skipLibCheck',
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
      ]
      const result = await timed(`${system} tsc`, () =>
        run(
          process.execPath,
          [tsc, ...args, '--typeRoots', join(ROOT, 'node_modules', '@types'), '--types', 'node', file],
          dir,
        ),
      )
      expect(result.code, result.stdout).toBe(0)
    }, 120_000)
  }

  test('the latchkey bin: keygen, then a command on a SQLite store', async () => {
    const dir = join(work, 'esm')
    const bin = join(dir, 'node_modules', '.bin', 'latchkey')
    const key = await run(bin, ['keygen'], dir)
    expect(key.code, key.stderr).toBe(0)
    expect(key.stdout).toMatch(/^[A-Za-z0-9_-]{43}\n$/)
    // A read-only command creates nothing: exit 6 until migrate has made the database.
    const missing = await run(bin, ['count', '--store', 'sqlite:cli.db', '--json'], dir)
    expect(missing.code, missing.stderr).toBe(6)
    const migrate = await run(bin, ['migrate', '--store', 'sqlite:cli.db'], dir)
    expect(migrate.code, migrate.stderr).toBe(0)
    const count = await run(bin, ['count', '--store', 'sqlite:cli.db', '--json'], dir)
    expect(count.code, count.stderr).toBe(0)
    expect(JSON.parse(count.stdout)).toEqual({ ok: true, count: 0 })
    const help = await run(bin, ['--help'], dir)
    expect(help.stdout).toContain('Exit codes:')
  })

  test('without the drivers: each store is a ConfigError naming the package and the install command', async () => {
    const dir = join(work, 'bare')
    const probe = `
      const out = {}
      const attempt = async (name, make) => {
        try { await make(); out[name] = 'no error' } catch (e) { out[name] = e.name + ': ' + e.message }
      }
      await attempt('sqlite', async () => new (await import('latchkey/stores/sqlite')).SqliteStore({ path: 'x.db' }))
      await attempt('postgres', async () => new (await import('latchkey/stores/postgres')).PostgresStore({ connectionString: 'postgres://x@127.0.0.1:1/x' }))
      await attempt('mysql', async () => new (await import('latchkey/stores/mysql')).MySqlStore({ uri: 'mysql://x@127.0.0.1:1/x' }))
      await attempt('redis', async () => new (await import('latchkey/stores/redis')).RedisStore({ url: 'redis://127.0.0.1:1' }))
      await attempt('openStore', async () => (await import('latchkey/stores')).openStore('sqlite:x.db'))
      for (const adapter of ${JSON.stringify(subpaths.filter((s) => ['express', 'fastify', 'hono', 'koa'].includes(s.split('/')[1] ?? '')))}) {
        await attempt(adapter, async () => import(adapter))
      }
      // Without @opentelemetry/api (an optional peer), a manager with the default metrics works.
      const core = await import('latchkey')
      await attempt('manager', async () => {
        const manager = core.createSessionManager({ store: new core.MemoryStore(), keys: [core.generateKey()] })
        const session = await manager.load({})
        session.set('n', 1)
        const { setCookie } = await manager.commit(session)
        if (!setCookie) throw new Error('no cookie')
      })
      out.otel = (() => { try { import.meta.resolve('@opentelemetry/api'); return 'installed' } catch { return 'absent' } })()
      console.log(JSON.stringify(out))
    `
    writeFileSync(join(dir, 'probe.mjs'), probe)
    const result = await run(process.execPath, ['probe.mjs'], dir)
    expect(result.code, result.stderr).toBe(0)
    const out = JSON.parse(result.stdout) as Record<string, string>
    const drivers: Record<string, string> = {
      sqlite: 'better-sqlite3',
      postgres: 'pg',
      mysql: 'mysql2',
      redis: 'redis',
      openStore: 'better-sqlite3',
    }
    for (const [name, driver] of Object.entries(drivers)) {
      expect(out[name], name).toMatch(/^ConfigError: /)
      expect(out[name], name).toContain(`needs the ${driver} package`)
      expect(out[name], name).toContain(`npm install ${driver}`)
    }
    expect(DRIVERS.every((driver) => !existsSync(join(dir, 'node_modules', driver)))).toBe(true)
    expect(out.otel).toBe('absent')
    expect(out.manager).toBe('no error')
    // An adapter's framework, when the adapter needs it at run time, is named with its install command.
    for (const [name, message] of Object.entries(out)) {
      if (!name.startsWith('latchkey/')) continue
      const named =
        message === 'no error' || (/^ConfigError: /.test(message) && message.includes('npm install'))
      expect(named, `${name}: ${message}`).toBe(true)
    }
    // The CLI says the same, with exit code 2.
    const cli = await run(
      join(dir, 'node_modules', '.bin', 'latchkey'),
      ['count', '--store', 'sqlite:x.db'],
      dir,
    )
    expect(cli.code).toBe(2)
    expect(cli.stderr).toContain('npm install better-sqlite3')
  })

  test("the README's Quick start runs as pasted: key first, its folder made, one visit per page, none for /favicon.ico", async () => {
    // The CommonJS project is what `npm init -y` and the Install line make.
    const dir = join(work, 'cjs')
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    const section = readme.slice(readme.indexOf('## Quick start: node:http'))
    const blocks = [...section.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => ({
      lang: m[1],
      code: m[2] as string,
    }))
    const [setup, server, start] = blocks
    expect(setup?.lang).toBe('sh')
    expect(server?.lang).toBe('js')
    expect(start?.lang).toBe('sh')
    expect(setup!.code).toContain('npm install latchkey better-sqlite3')
    expect(setup!.code).toContain('npx latchkey keygen')
    // The npm lines ran already (the project is installed); the rest runs as written.
    const rest = setup!.code.split('\n').filter((line) => line.trim() !== '' && !/^npm /.test(line))
    const made = await run('bash', ['-c', rest.join('\n')], dir)
    expect(made.code, made.stderr).toBe(0)
    // The README's port, swapped for a free one so that nothing else on this machine is in the way.
    expect(server!.code).toContain('3001')
    const port = await freePort()
    writeFileSync(join(dir, 'server.mjs'), server!.code.replaceAll('3001', String(port)))
    const command = start!.code.split('\n').find((line) => line.includes('node server.mjs'))!
    // Its own process group, so that the shell and node stop together.
    const child = spawn('bash', ['-c', command], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    let output = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk
    })
    try {
      for (let i = 0; i < 200 && !output.includes(`localhost:${port}`); i++)
        await new Promise((r) => setTimeout(r, 50))
      expect(output).toContain(`http://localhost:${port}`)
      const base = `http://localhost:${port}`
      const first = await fetch(`${base}/`)
      const cookie = first.headers.get('set-cookie')?.split(';')[0] ?? ''
      expect(cookie).toMatch(/^__Host-sid=/)
      expect(await first.text()).toBe('visits: 1\n')
      const favicon = await fetch(`${base}/favicon.ico`, { headers: { cookie } })
      expect(favicon.status).toBe(404)
      await favicon.text()
      const second = await fetch(`${base}/`, { headers: { cookie } })
      expect(await second.text()).toBe('visits: 2\n')
      expect(existsSync(join(dir, 'var', 'sessions.db'))).toBe(true)
    } finally {
      process.kill(-(child.pid as number), 'SIGTERM')
    }
  })

  test('the docs link only to files in the repository, and the docs they link to ship', () => {
    for (const doc of ['README.md', 'CHANGELOG.md', ...files.filter((file) => file.startsWith('docs/'))]) {
      const text = readFileSync(join(ROOT, doc), 'utf8')
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^(https?:|mailto:|#)/.test(target as string)) continue
        const path = resolve(dirname(join(ROOT, doc)), (target as string).split('#')[0] as string)
        expect(relative(ROOT, path).startsWith('..'), `${doc} -> ${target}`).toBe(false)
        expect(existsSync(path), `${doc} -> ${target}`).toBe(true)
        const inRepo = relative(ROOT, path)
        if (/^(docs\/|CHANGELOG\.md$|LICENSE$)/.test(inRepo))
          expect(files, `${doc} -> ${target} ships`).toContain(inRepo)
      }
    }
    expect(readFileSync(join(ROOT, 'README.md'), 'utf8')).not.toMatch(/\.\.\/shared|DESIGN\.md/)
  })
})

/** A free TCP port on 127.0.0.1 (the Quick start listens on a fixed one). */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done))
  const { port } = server.address() as { port: number }
  await new Promise((done) => server.close(done))
  return port
}
