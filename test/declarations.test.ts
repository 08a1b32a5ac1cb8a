// The package as a new user's project sees it, built as it ships (tsc into a scratch project's
// node_modules/latchkey, with the packages it needs linked from this repository's install):
// - its public declarations compile in a project without @types/node (TypeScript 7 loads no @types
//   package its `types` does not list), every subpath but those whose types are node's by nature;
// - examples/express-sqlite, plain JavaScript importing `latchkey` by name, runs on it: sign-in, the
//   counter, sign-out over HTTP, every form with its CSRF token.
// pack.test.ts packs and installs the tarball itself; this file is the quicker, narrower check.
import { type ChildProcess, spawn } from 'node:child_process'
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { generateKey } from '../src/index.js'
import { ROOT } from './support/cli.js'

const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')

/** Subpaths whose declarations need neither node's types nor the DOM's: checked with lib ES2023 alone. */
const NODE_FREE = [
  'latchkey',
  'latchkey/stores',
  'latchkey/stores/file',
  'latchkey/stores/sqlite',
  'latchkey/testing',
]
/** Hono's own types are the web's (Request, Response): checked with the DOM lib, still without node's. */
const WEB = ['latchkey/hono']
/** Subpaths that need @types/node, and why. */
const NEEDS_NODE: Record<string, string> = {
  'latchkey/node': "its handlers take node's IncomingMessage and ServerResponse",
  'latchkey/express': "Express's types (@types/express) are built on node's",
  'latchkey/express/augment': "Express's types (@types/express) are built on node's",
  'latchkey/express-session':
    "its middleware takes node's IncomingMessage and ServerResponse, its Store is node's EventEmitter",
  'latchkey/fastify': "Fastify's types import node:http",
  'latchkey/koa': "Koa's types (@types/koa) are built on node's",
  'latchkey/stores/postgres': "pg's types (@types/pg) are built on node's",
  'latchkey/stores/mysql': "mysql2's types are built on node's",
  'latchkey/stores/redis':
    "its command options take an AbortSignal (node's or the DOM's), and node-redis's types need node's",
}

interface Manifest {
  exports: Record<string, string | { types: string }>
  dependencies: Record<string, string>
}
const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Manifest
const subpaths = Object.entries(manifest.exports).flatMap(([key, value]) =>
  typeof value === 'string' ? [] : [{ name: `latchkey${key.slice(1)}`, types: value.types }],
)

let work: string
let app: string

interface Run {
  code: number | null
  output: string
}

function run(command: string, args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk
    })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, output }))
  })
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'latchkey-declarations-'))
  app = join(work, 'app')
  const modules = join(app, 'node_modules')
  const pkg = join(modules, 'latchkey')
  mkdirSync(pkg, { recursive: true })
  const build = await run(
    process.execPath,
    [TSC, '-p', 'tsconfig.build.json', '--outDir', join(pkg, 'dist')],
    ROOT,
  )
  expect(build.output).toBe('')
  copyFileSync(join(ROOT, 'package.json'), join(pkg, 'package.json'))
  // latchkey's own dependencies, and what the scratch code imports; not @types/node.
  for (const name of [...Object.keys(manifest.dependencies), 'express', 'better-sqlite3', 'hono']) {
    symlinkSync(join(ROOT, 'node_modules', name), join(modules, name), 'junction')
  }
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }))
}, 240_000)

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true })
})

describe('declarations', () => {
  test('every subpath of the exports map is sorted: free of node types, or needing them for a reason', () => {
    const sorted = [...NODE_FREE, ...WEB, ...Object.keys(NEEDS_NODE)].sort()
    expect(sorted).toEqual(subpaths.map((subpath) => subpath.name).sort())
  })

  test("tsconfig.json maps each subpath to its source, so the repository's examples type-check without a build", () => {
    const paths = (
      JSON.parse(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8')) as {
        compilerOptions: { paths: Record<string, string[]> }
      }
    ).compilerOptions.paths
    const expected = Object.fromEntries(
      subpaths.map(({ name, types }) => [
        name,
        [types.replace(/^\.\/dist\//, './src/').replace(/\.d\.ts$/, '.ts')],
      ]),
    )
    expect(paths).toEqual(expected)
  })

  /** Type-checks `source` in the scratch project with `"types": []` and the given libs; returns tsc's output. */
  async function check(name: string, lib: string[], source: string): Promise<string> {
    // The control: were node's types reachable, this expected error would be missing, and tsc would say so.
    const control = "// @ts-expect-error node's types are not loaded\nexport type NodeBuffer = Buffer\n"
    writeFileSync(join(app, `${name}.ts`), `${source}\n${control}`)
    const compilerOptions = {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib,
      types: [],
      strict: true,
      skipLibCheck: false,
      noEmit: true,
    }
    writeFileSync(
      join(app, `tsconfig.${name}.json`),
      JSON.stringify({ compilerOptions, files: [`${name}.ts`] }),
    )
    const result = await run(process.execPath, [TSC, '-p', `tsconfig.${name}.json`], app)
    return result.output
  }

  test('the node-free subpaths compile in a project without @types/node (lib ES2023 alone)', async () => {
    const imports = NODE_FREE.map((subpath, i) => `import * as m${i} from '${subpath}'`).join('\n')
    const source = `${imports}
import type { Session, SessionStore } from 'latchkey'
const manager = m0.createSessionManager<{ visits: number }>({ store: new m0.MemoryStore(), keys: [m0.generateKey()] })
export const visits = (session: Session<{ visits: number }>): number => session.update('visits', (n = 0) => n + 1)
export const stores: Array<Promise<SessionStore> | SessionStore> = [
  m1.openStore('memory:'),
  new m2.FileStore({ directory: 'sessions' }),
  new m3.SqliteStore({ path: 'sessions.db' }),
]
export const used = [manager, m4.ManualClock]
`
    expect(await check('node-free', ['ES2023'], source)).toBe('')
  }, 120_000)

  test("latchkey/express-session types req.session on Express's Request without @types/express-session, its data declared by module augmentation", async () => {
    // A project of its own: latchkey as built, express, and every @types package of this repository
    // but @types/express-session (a devDependency here, for the cross-version tests).
    const project = join(work, 'express-session-app')
    const types = join(project, 'node_modules', '@types')
    mkdirSync(types, { recursive: true })
    for (const name of ['latchkey', 'express']) {
      symlinkSync(join(app, 'node_modules', name), join(project, 'node_modules', name), 'junction')
    }
    for (const name of readdirSync(join(ROOT, 'node_modules', '@types'))) {
      if (name !== 'express-session')
        symlinkSync(join(ROOT, 'node_modules', '@types', name), join(types, name), 'junction')
    }
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({ name: 'scratch-express-session', private: true, type: 'module' }),
    )
    const source = `import express from 'express'
import session from 'latchkey/express-session'
// @ts-expect-error the control: @types/express-session is not installed in this project
import type {} from 'express-session'

declare module 'latchkey/express-session' {
  interface SessionData {
    user: string
    visits: number
  }
}

export const app = express()
app.use(session({ secret: 'keyboard cat', resave: false, saveUninitialized: false }))
app.get('/', (req, res, next) => {
  const user: string | undefined = req.session.user
  req.session.visits = (req.session.visits ?? 0) + 1
  // @ts-expect-error a value of the wrong type for a declared key
  req.session.user = 42
  const id: string = req.sessionID
  req.session.cookie.maxAge = 60_000
  const left: number | null = req.session.cookie.maxAge
  req.sessionStore.get(id, () => {})
  req.session.regenerate((error) => {
    if (error) return next(error)
    req.session.save(() => res.json({ user, left, id: req.sessionID }))
  })
})
app.get('/out', (req, res) => {
  req.session.destroy(() => res.end())
})
`
    writeFileSync(join(project, 'app.ts'), source)
    const compilerOptions = {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib: ['ES2023'],
      types: ['node'],
      strict: true,
      skipLibCheck: false,
      noEmit: true,
    }
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['app.ts'] }))
    const result = await run(process.execPath, [TSC, '-p', 'tsconfig.json'], project)
    expect(result.output).toBe('')
  }, 120_000)

  test('latchkey/hono compiles in a project without @types/node (with the DOM lib Hono needs)', async () => {
    const source = `import { Hono } from 'hono'
import { createSessionManager, MemoryStore } from 'latchkey'
import { sessions } from 'latchkey/hono'
const manager = createSessionManager<{ visits: number }>({ store: new MemoryStore() })
export const app = new Hono()
  .use(sessions(manager))
  .get('/', (c) => c.text(String(c.get('session').update('visits', (n = 0) => n + 1))))
`
    expect(await check('hono', ['ES2023', 'DOM', 'DOM.Iterable'], source)).toBe('')
  }, 120_000)
})

/** A browser as far as the example can tell: a cookie jar, redirects not followed, the last form's token. */
class Browser {
  readonly cookies = new Map<string, string>()
  token = ''

  constructor(readonly base: string) {}

  async send(path: string, form?: Record<string, string>): Promise<{ status: number; body: string }> {
    const headers: Record<string, string> = {}
    if (this.cookies.size > 0) {
      headers.cookie = [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ')
    }
    if (form) headers['content-type'] = 'application/x-www-form-urlencoded'
    const response = await fetch(this.base + path, {
      method: form ? 'POST' : 'GET',
      headers,
      body: form ? new URLSearchParams(form).toString() : undefined,
      redirect: 'manual',
    })
    for (const header of response.headers.getSetCookie()) {
      const [pair = ''] = header.split(';')
      const at = pair.indexOf('=')
      if (/;\s*max-age=0(;|$)/i.test(header)) this.cookies.delete(pair.slice(0, at))
      else this.cookies.set(pair.slice(0, at), pair.slice(at + 1))
    }
    const body = await response.text()
    this.token = /name="_csrf" value="([^"]+)"/.exec(body)?.[1] ?? this.token
    return { status: response.status, body }
  }

  /** Submits a form of the last page, with its token. */
  post(path: string, fields: Record<string, string> = {}): Promise<{ status: number; body: string }> {
    return this.send(path, { _csrf: this.token, ...fields })
  }
}

const signedInAs = (body: string): string | null =>
  /<strong id="user">([^<]*)<\/strong>/.exec(body)?.[1] ?? null
const count = (body: string): number | null => {
  const match = /<span id="count">(\d+)<\/span>/.exec(body)
  return match ? Number(match[1]) : null
}

describe('examples/express-sqlite', () => {
  let server: ChildProcess | undefined
  let url: string

  beforeAll(async () => {
    copyFileSync(join(ROOT, 'examples', 'express-sqlite', 'server.js'), join(app, 'server.js'))
    server = spawn(process.execPath, ['server.js'], {
      cwd: app,
      env: {
        ...process.env,
        PORT: '0',
        SESSIONS_DB: join(work, 'sessions.db'),
        LATCHKEY_KEYS: generateKey(),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const started = server
    url = await new Promise<string>((resolve, reject) => {
      let output = ''
      const read = (chunk: string): void => {
        output += chunk
        const match = /listening on (http:\/\/\S+)/.exec(output)
        if (match?.[1]) resolve(match[1].replace('localhost', '127.0.0.1'))
      }
      started.stdout?.setEncoding('utf8').on('data', read)
      started.stderr?.setEncoding('utf8').on('data', read)
      started.on('exit', (code) => reject(new Error(`the example exited (${code}):\n${output}`)))
    })
  }, 60_000)

  afterAll(async () => {
    const running = server
    if (!running || running.exitCode !== null) return
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGTERM')
    await exited
  })

  test('sign-in, the counter and sign-out, every form with its CSRF token; a form without one is refused', async () => {
    const browser = new Browser(url)
    const home = await browser.send('/')
    expect(home.status).toBe(200)
    expect(home.body).toContain('action="/login"')
    expect(signedInAs(home.body)).toBeNull()

    const forged = await browser.send('/login', { name: 'Mallory' })
    expect(forged.status).toBe(403)
    expect(forged.body).toContain('missing-token')

    expect((await browser.post('/login', { name: 'Ada' })).status).toBe(303)
    const sid = [...browser.cookies].find(([name]) => name.endsWith('sid'))
    expect(sid).toBeDefined()
    const signedIn = await browser.send('/')
    expect(signedInAs(signedIn.body)).toBe('Ada')
    expect(count(signedIn.body)).toBe(0)

    for (let n = 1; n <= 3; n++) {
      expect((await browser.post('/count')).status).toBe(303)
      expect(count((await browser.send('/')).body)).toBe(n)
    }
    expect((await browser.send('/count', { _csrf: 'not-a-token' })).status).toBe(403)
    expect(count((await browser.send('/')).body)).toBe(3)

    expect((await browser.post('/logout')).status).toBe(303)
    const out = await browser.send('/')
    expect(signedInAs(out.body)).toBeNull()
    expect(out.body).toContain('action="/login"')

    // The cookie of before the sign-out opens nothing any more.
    const replay = new Browser(url)
    replay.cookies.set(...(sid as [string, string]))
    expect(signedInAs((await replay.send('/')).body)).toBeNull()
  }, 60_000)
})
