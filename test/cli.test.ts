// The built `latchkey` CLI as a child process, against SQLite, files, PostgreSQL, MariaDB and Redis:
// every command, its exit codes, --json, --help, and passwords masked in every message.
import { execFile, spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { generateKey, Keyring } from '../src/core/crypto.js'
import { storeKeyOf } from '../src/core/id.js'
import { isNoticeRecord, noticeKeyOf } from '../src/core/lifecycle/notice.js'
import type { SessionManager } from '../src/core/manager.js'
import { isListableStore, type SessionRecord, type SessionStore } from '../src/core/store.js'
import { openStore } from '../src/stores/index.js'
import { builtCli, type CliResult, jsonOf, runCli } from './support/cli.js'
import {
  appManager,
  type Backend,
  backends,
  closeStore,
  isLive,
  seedSession,
} from './support/cli-backends.js'
import { describeWithService, SERVICE_URLS } from './support/services.js'

let main: string
beforeAll(async () => {
  main = await builtCli()
}, 240_000)

const all = await backends('cli')
afterAll(async () => {
  for (const backend of all) await backend.cleanup()
})

const COMMANDS = [
  'keygen',
  'migrate',
  'schema',
  'count',
  'list',
  'revoke',
  'prune',
  'rekey',
  'import-express-sessions',
]

function output(result: CliResult): string {
  return `${result.stdout}\n${result.stderr}`
}

describe('latchkey CLI: arguments, help, keys, exit codes', () => {
  test('--help for the program and for every command, exit codes listed', async () => {
    const top = await runCli(main, ['--help'])
    expect(top.code).toBe(0)
    for (const command of COMMANDS) expect(top.stdout).toContain(command)
    expect(top.stdout).toContain('Exit codes:')
    for (const command of COMMANDS) {
      const help = await runCli(main, [command, '--help'])
      expect(help.code, command).toBe(0)
      expect(help.stdout).toContain(`Usage: latchkey ${command}`)
      if (command !== 'keygen') expect(help.stdout).toContain('--store <url>')
    }
  })

  test('--version prints the package version', async () => {
    const result = await runCli(main, ['--version'])
    expect(result.code).toBe(0)
    expect(result.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/)
  })

  test('keygen prints a fresh 32-byte base64url key, also as JSON', async () => {
    const a = await runCli(main, ['keygen'])
    const b = await runCli(main, ['keygen', '--json'])
    expect(a.code).toBe(0)
    expect(a.stdout).toMatch(/^[A-Za-z0-9_-]{43}\n$/)
    const key = jsonOf(b).key as string
    expect(key).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(key).not.toBe(a.stdout.trim())
    expect(Buffer.from(key, 'base64url')).toHaveLength(32)
  })

  test('usage errors exit 2: no command, unknown command, unknown option, no --store, revoke without a target', async () => {
    const cases = [
      [],
      ['frobnicate'],
      ['count', '--store', 'memory:', '--frobnicate'],
      ['count'],
      ['revoke', '--store', 'memory:'],
      ['revoke', '--store', 'memory:', '--user', 'a', '--all'],
      ['rekey', '--store', 'memory:', '--concurrency', '0'],
    ]
    for (const args of cases) {
      const result = await runCli(main, args, { env: { LATCHKEY_KEYS: generateKey() } })
      expect(result.code, args.join(' ')).toBe(2)
      expect(result.stderr, args.join(' ')).not.toBe('')
    }
  })

  test('usage errors with --json still print one JSON document', async () => {
    const result = await runCli(main, ['count', '--json'])
    expect(result.code).toBe(2)
    expect(jsonOf(result)).toMatchObject({ ok: false, error: { exitCode: 2 } })
  })

  test('an unknown scheme and a missing key are configuration errors (exit 2) that say what to do', async () => {
    const scheme = await runCli(main, ['count', '--store', 'mongodb://db/sessions'])
    expect(scheme.code).toBe(2)
    expect(scheme.stderr).toContain('sqlite:')
    const keys = await runCli(main, ['list', '--store', 'memory:'])
    expect(keys.code).toBe(2)
    expect(keys.stderr).toContain('LATCHKEY_KEYS')
    expect(keys.stderr).toContain('latchkey keygen')
    const bad = await runCli(main, ['list', '--store', 'memory:'], { env: { LATCHKEY_KEYS: 'short' } })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('LATCHKEY_KEYS[0]: must be at least 32 bytes')
    const twice = generateKey()
    const dup = await runCli(main, ['rekey', '--store', 'memory:'], {
      env: { LATCHKEY_KEYS: `${twice},${twice}` },
    })
    expect(dup.code).toBe(2)
    expect(dup.stderr).toContain('LATCHKEY_KEYS[1]: is listed twice')
  })

  test('--keys-file: newline or comma separated, comments allowed; an unreadable file is exit 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'latchkey-keys-'))
    try {
      const file = join(dir, 'keys')
      writeFileSync(file, `# current\n${generateKey()}\n# old\n${generateKey()},\n`, { mode: 0o600 })
      const ok = await runCli(main, ['list', '--store', 'memory:', '--keys-file', file, '--json'])
      expect(ok.code).toBe(0)
      expect(jsonOf(ok)).toEqual({ ok: true, sessions: [], anonymous: 0, unopenable: 0 })
      const missing = await runCli(main, ['list', '--store', 'memory:', '--keys-file', join(dir, 'none')])
      expect(missing.code).toBe(2)
      writeFileSync(file, `${generateKey()}\n`)
      chmodSync(file, 0o644)
      const open = await runCli(main, ['count', '--store', 'memory:'])
      expect(open.code).toBe(0)
      const loose = await runCli(main, ['list', '--store', 'memory:', '--keys-file', file])
      expect(loose.code).toBe(0)
      expect(loose.stderr).toContain('readable by other users')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('LATCHKEY_STORE stands in for --store', async () => {
    const result = await runCli(main, ['count', '--json'], { env: { LATCHKEY_STORE: 'memory:' } })
    expect(result.code).toBe(0)
    expect(jsonOf(result)).toEqual({ ok: true, count: 0 })
  })

  test('an unreachable store is exit 3, and the password never shows, whatever the message', async () => {
    const secret = 'Pa55-w0rd-CLI'
    const runs = [
      ['count', '--store', `postgres://root:${secret}@127.0.0.1:1/test`],
      ['count', '--store', `mysql://root:${secret}@127.0.0.1:1/test`, '--json'],
      ['prune', '--store', `redis://default:${secret}@127.0.0.1:1`],
      ['count', '--store', `redis+cluster://u:${secret}@127.0.0.1:1,u:${secret}@127.0.0.1:2`],
    ]
    for (const args of runs) {
      const result = await runCli(main, args)
      expect(result.code, args.join(' ')).toBe(3)
      expect(output(result)).not.toContain(secret)
      expect(output(result)).toContain('***')
    }
    // The URL where a command expects none, and in the environment.
    const stray = await runCli(main, ['count', `postgres://root:${secret}@127.0.0.1:1/test`])
    expect(stray.code).toBe(2)
    expect(output(stray)).not.toContain(secret)
    const env = await runCli(main, ['count', '--json'], {
      env: { LATCHKEY_STORE: `postgres://root:${encodeURIComponent(`${secret}/@`)}@127.0.0.1:1/test` },
    })
    expect(env.code).toBe(3)
    expect(output(env)).not.toContain(secret)
  })

  test('a capability the store lacks is exit 4: migrate and schema of a store without a schema', async () => {
    for (const command of ['migrate', 'schema']) {
      const result = await runCli(main, [command, '--store', 'memory:', '--json'])
      expect(result.code).toBe(4)
      expect(jsonOf(result)).toMatchObject({
        ok: false,
        error: { exitCode: 4, code: 'ERR_LATCHKEY_UNSUPPORTED' },
      })
    }
  })
})

describe('latchkey CLI: control characters in messages', () => {
  // A message printed raw could clear the operator's screen, retitle the terminal, recolour the rest:
  // every control character but the line's own end is shown as an escape.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
  const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/
  const HOSTILE = 'old store down \u001b[2J\u001b]0;owned\u0007 \u009b31m\u007f'
  const ESCAPED = 'old store down \\x1b[2J\\x1b]0;owned\\x07 \\x9b31m\\x7f'

  test('import-express-sessions: the old store’s error is escaped on stderr, and whole in --json', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'latchkey-import-'))
    try {
      const module = join(dir, 'old-store.mjs')
      writeFileSync(
        module,
        `const expires = new Date(Date.now() + 3_600_000).toISOString()
const sessions = { 'sid-1': { cookie: { originalMaxAge: 3_600_000, expires }, user: 'ann' } }
export const store = {
  get: (sid, cb) => cb(null, sessions[sid] ?? null),
  set: (sid, session, cb) => cb(null),
  destroy: (sid, cb) => cb(new Error(${JSON.stringify(HOSTILE)})),
  all: (cb) => cb(null, sessions),
}
`,
      )
      const args = [
        'import-express-sessions',
        '--from-module',
        module,
        '--store',
        'memory:',
        '--delete-source',
      ]
      const env = { LATCHKEY_KEYS: generateKey() }
      const text = await runCli(main, args, { env })
      expect(text.code).toBe(5)
      expect(text.stderr).toContain(ESCAPED)
      expect(output(text)).not.toMatch(RAW_CONTROL)
      const json = await runCli(main, [...args, '--json'], { env })
      expect(json.code).toBe(5)
      expect(output(json)).not.toMatch(RAW_CONTROL)
      expect(json.stderr).toContain(ESCAPED)
      expect((jsonOf(json).error as { message: string }).message).toContain(HOSTILE)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('a usage error quoting an argument shows it escaped', async () => {
    const result = await runCli(main, ['count', '--store', 'memory:', `--${HOSTILE.replace(/ /g, '-')}`])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain(ESCAPED.replace(/ /g, '-'))
    expect(output(result)).not.toMatch(RAW_CONTROL)
  })
})

describe('latchkey CLI: progress', () => {
  const hasScript = spawnSync('script', ['--version']).status === 0
  test.skipIf(!hasScript)(
    'a progress bar on a terminal (rekey, prune, revoke --all), none when not',
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'latchkey-tty-'))
      try {
        const url = `sqlite:${join(dir, 'sessions.db')}`
        const key = generateKey()
        const store = await openStore(url)
        const app = appManager(store, [key])
        for (let i = 0; i < 300; i++) await seedSession(app, { data: { i } })
        await closeStore(store)
        const keys = `${generateKey()},${key}`
        // `script` gives the command a pseudo-terminal; its output is what a terminal would show.
        const onTerminal = (args: string) =>
          new Promise<string>((resolve, reject) => {
            execFile(
              'script',
              ['-qec', `${JSON.stringify(process.execPath)} ${JSON.stringify(main)} ${args}`, '/dev/null'],
              { env: { ...process.env, LATCHKEY_KEYS: keys } },
              (error, stdout) => (error ? reject(error) : resolve(stdout)),
            )
          })
        const rekey = await onTerminal(`rekey --store ${url}`)
        expect(rekey).toMatch(/rekeying \[[#-]+\] \d+% \d+\/300/)
        expect(rekey).toContain('re-sealed 300')
        expect(await onTerminal(`prune --store ${url}`)).toContain('pruning expired records')
        expect(await onTerminal(`revoke --all --store ${url}`)).toMatch(/revoking \[/)
        // Not a terminal (a pipe): the same work, no bar.
        const piped = await runCli(main, ['rekey', '--store', url], { env: { LATCHKEY_KEYS: keys } })
        expect(piped.code).toBe(0)
        expect(piped.stderr).not.toContain('rekeying')
        expect(piped.stderr).not.toContain('\u001b[')
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    },
  )
})

function backendSuite(backend: Backend): void {
  const oldKey = generateKey()
  const newKey = generateKey()
  let store: SessionStore
  let manager: SessionManager
  const ids: Record<string, string> = {}
  const cli = (args: string[], keys: string[] | null = [oldKey]) =>
    runCli(main, [...args, ...backend.args()], {
      env: { LATCHKEY_KEYS: keys === null ? undefined : keys.join(',') },
    })

  beforeAll(async () => {
    store = await backend.open()
    manager = appManager(store, [oldKey])
  })
  afterAll(async () => {
    if (store) await closeStore(store)
  })

  test('schema prints the DDL and migrate creates it (exit 4 for a store without a schema)', async () => {
    const schema = await cli(['schema'])
    const migrate = await cli(['migrate', '--json'])
    if (backend.migratable) {
      expect(schema.code).toBe(0)
      expect(schema.stdout).toMatch(/CREATE TABLE/i)
      expect(schema.stdout).toContain('latchkey_')
      expect(migrate.code).toBe(0)
      // The application's store made the table on first use: migrate finds it up to date, and says so.
      expect(jsonOf(migrate)).toMatchObject({ ok: true, outcome: 'current', migrated: false })
      const again = await cli(['migrate'])
      expect(again.code).toBe(0)
      expect(again.stdout).toContain('the table is already up to date: latchkey_')
    } else if (backend.name === 'Redis') {
      // No DDL; migrate sets up the prefix (its marker key), which the app's store already wrote.
      expect(schema.code).toBe(4)
      expect(migrate.code, migrate.stderr).toBe(0)
      expect(jsonOf(migrate)).toMatchObject({ ok: true, outcome: 'current', migrated: false })
    } else {
      expect(schema.code).toBe(4)
      expect(migrate.code).toBe(4)
    }
  })

  test('count, as text and as JSON', async () => {
    ids.alicePhone = await seedSession(manager, { user: 'alice', userAgent: 'Phone/1.0' })
    ids.aliceLaptop = await seedSession(manager, { user: 'alice', userAgent: 'Laptop/2.0' })
    ids.aliceTablet = await seedSession(manager, { user: 'alice', userAgent: 'Tablet/3.0' })
    ids.bob = await seedSession(manager, { user: 'bob', userAgent: 'Desk/4.0' })
    ids.anonymous1 = await seedSession(manager, { data: { cart: ['x'] } })
    ids.anonymous2 = await seedSession(manager, { data: { flash: 'hi' } })
    // Each signed-in session has its pending notice (of a timeout, `session.endedBecause`): a record,
    // not a session, so not counted.
    for (const id of [ids.alicePhone, ids.aliceLaptop, ids.aliceTablet, ids.bob])
      expect(manager.inspect((await store.get(noticeKeyOf(storeKeyOf(id)))) as SessionRecord)).toBe('notice')
    const text = await cli(['count'])
    expect(text.code).toBe(0)
    expect(text.stdout).toBe('6\n')
    expect(jsonOf(await cli(['count', '--json']))).toEqual({ ok: true, count: 6, unopenable: 0 })
  })

  test('list --user: handles, user, created, last seen, device; never IDs or store keys', async () => {
    const result = await cli(['list', '--user', 'alice', '--json'])
    expect(result.code).toBe(0)
    const { sessions } = jsonOf(result) as { sessions: Record<string, unknown>[] }
    expect(sessions).toHaveLength(3)
    expect(sessions.map((s) => s.userAgent).sort()).toEqual(['Laptop/2.0', 'Phone/1.0', 'Tablet/3.0'])
    for (const session of sessions) {
      expect(Object.keys(session).sort()).toEqual(['createdAt', 'handle', 'lastSeenAt', 'user', 'userAgent'])
      expect(session.user).toBe('alice')
      expect(Date.parse(session.createdAt as string)).toBeGreaterThan(Date.now() - 600_000)
    }
    const text = await cli(['list', '--user', 'alice'])
    expect(text.stdout.split('\n')[0]).toMatch(/^USER\s+CREATED\s+LAST SEEN\s+DEVICE\s+HANDLE$/)
    for (const id of Object.values(ids)) {
      for (const shown of [result.stdout, text.stdout, text.stderr]) {
        expect(shown).not.toContain(id)
        expect(shown).not.toContain(storeKeyOf(id))
      }
    }
  })

  test('list without --user: every signed-in session, and how many anonymous ones', async () => {
    const result = await cli(['list', '--json'])
    expect(result.code).toBe(0)
    const listed = jsonOf(result) as { sessions: { user: string }[]; anonymous: number }
    expect(listed.sessions.map((s) => s.user)).toEqual(['alice', 'alice', 'alice', 'bob'])
    expect(listed.anonymous).toBe(2)
  })

  test('a user agent or user ID with control characters is shown escaped in the table, never raw', async () => {
    const hostile = 'Evil\u001b[31m/1.0\u009b2J\u007f\u0007'
    await seedSession(manager, { user: 'eve\u001b]0;x', userAgent: hostile })
    const text = await cli(['list', '--user', 'eve\u001b]0;x'])
    expect(text.code).toBe(0)
    expect(text.stdout).toContain('Evil\\x1b[31m/1.0\\x9b2J\\x7f\\x07')
    expect(text.stdout).toContain('eve\\x1b]0;x')
    // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
    expect(text.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/)
    const json = jsonOf(await cli(['list', '--user', 'eve\u001b]0;x', '--json'])) as {
      sessions: { userAgent: string }[]
    }
    expect(json.sessions[0]?.userAgent).toBe(hostile)
    expect(jsonOf(await cli(['revoke', '--user', 'eve\u001b]0;x', '--json']))).toMatchObject({ revoked: 1 })
  })

  test('revoke --handle ends that session only; the same handle again is exit 1', async () => {
    const listed = jsonOf(await cli(['list', '--user', 'alice', '--json'])) as {
      sessions: { handle: string; userAgent: string }[]
    }
    const phone = listed.sessions.find((s) => s.userAgent === 'Phone/1.0')!
    const result = await cli(['revoke', '--handle', phone.handle, '--json'])
    expect(result.code).toBe(0)
    expect(jsonOf(result)).toEqual({ ok: true, revoked: 1 })
    expect(await isLive(manager, ids.alicePhone!)).toBe(false)
    expect(await isLive(manager, ids.aliceLaptop!)).toBe(true)
    const again = await cli(['revoke', '--handle', phone.handle, '--json'])
    expect(again.code).toBe(1)
    expect(jsonOf(again)).toMatchObject({ ok: false, error: { code: 'ERR_LATCHKEY_NOT_FOUND' } })
    expect((await cli(['revoke', '--handle', 'forged.handle'])).code).toBe(1)
  })

  test('revoke --user ends every session of that user', async () => {
    const result = await cli(['revoke', '--user', 'bob', '--json'])
    expect(result.code).toBe(0)
    expect(jsonOf(result)).toEqual({ ok: true, revoked: 1, unopenable: 0 })
    expect(await isLive(manager, ids.bob!)).toBe(false)
    expect(jsonOf(await cli(['count', '--json'], null))).toEqual({ ok: true, count: 4 })
    expect(jsonOf(await cli(['count', '--json']))).toEqual({ ok: true, count: 4, unopenable: 0 })
  })

  test('sessions sealed with a key not given: list reports them (exit 5), revoke --user ends them and says so', async () => {
    const stranger = appManager(store, [generateKey()])
    const id = await seedSession(stranger, { user: 'dave' })
    const listed = await cli(['list', '--user', 'dave', '--json'])
    expect(listed.code).toBe(5)
    expect(jsonOf(listed)).toMatchObject({
      ok: false,
      partial: { sessions: [], unopenable: 1 },
      error: { code: 'ERR_LATCHKEY_UNOPENABLE' },
    })
    const everything = await cli(['list', '--json'])
    expect(everything.code).toBe(5)
    expect(jsonOf(everything)).toMatchObject({ ok: false, partial: { unopenable: 1, anonymous: 2 } })
    // count agrees: with keys it opens the records and reports the one it cannot; without, it only counts.
    const counted = await cli(['count', '--json'])
    expect(counted.code).toBe(5)
    expect(jsonOf(counted)).toMatchObject({
      ok: false,
      partial: { count: 5, unopenable: 1 },
      error: { code: 'ERR_LATCHKEY_UNOPENABLE' },
    })
    expect((await cli(['count'])).stdout).toBe('5\n')
    expect((await cli(['count', '--json'], null)).code).toBe(0)
    const text = await cli(['revoke', '--user', 'dave'])
    expect(text.code).toBe(0)
    expect(text.stdout).toBe('revoked 1 session of dave (1 of them sealed with a key not given)\n')
    expect(await isLive(stranger, id)).toBe(false)
    expect((await cli(['list', '--user', 'dave'])).code).toBe(0)
    expect(jsonOf(await cli(['count', '--json']))).toEqual({ ok: true, count: 4, unopenable: 0 })
  })

  test('prune reports what it removed', async () => {
    const result = await cli(['prune', '--json'])
    expect(result.code).toBe(0)
    expect(jsonOf(result)).toEqual({ ok: true, removed: expect.any(Number) })
    expect((await cli(['prune'])).stdout).toMatch(/^removed \d+ expired/)
  })

  test('rekey re-seals every record with the first key; a second run finds them current', async () => {
    const result = await cli(['rekey', '--json'], [newKey, oldKey])
    expect(result.code).toBe(0)
    expect(jsonOf(result)).toMatchObject({ ok: true, resealed: 4, current: 0, unopenable: 0, busy: 0 })
    const onlyNew = new Keyring([Buffer.from(newKey, 'base64url')])
    if (!isListableStore(store)) throw new Error('listable')
    let records = 0
    for await (const record of store.list()) {
      // The notices (the one `revoke --user` left for bob's cookie, the pending ones of the signed-in
      // sessions) are no sessions: rekey leaves them alone.
      if (isNoticeRecord(record)) continue
      records++
      expect(onlyNew.open(record.payload, record.key)).not.toBeNull()
    }
    expect(records).toBe(4)
    const again = await cli(['rekey', '--json'], [newKey, oldKey])
    expect(jsonOf(again)).toMatchObject({ ok: true, resealed: 0, current: 4 })
    // The sessions still load, with the new key alone.
    const rotated = appManager(store, [newKey])
    expect(await isLive(rotated, ids.aliceLaptop!)).toBe(true)
    expect(await isLive(rotated, ids.anonymous1!)).toBe(true)
  })

  test('rekey without the key that sealed a record is a partial failure (exit 5) that leaves it as it is', async () => {
    const stranger = appManager(store, [generateKey()])
    const id = await seedSession(stranger, { user: 'carol' })
    const result = await cli(['rekey', '--json'], [newKey, oldKey])
    expect(result.code).toBe(5)
    expect(jsonOf(result)).toMatchObject({
      ok: false,
      partial: { unopenable: 1, current: 4 },
      error: { exitCode: 5, code: 'ERR_LATCHKEY_PARTIAL' },
    })
    expect(await isLive(stranger, id)).toBe(true)
    await stranger.revokeUserSessions('carol')
  })

  test('revoke --all ends every session, signed in or not', async () => {
    const result = await cli(['revoke', '--all', '--json'], [newKey, oldKey])
    expect(result.code).toBe(0)
    expect(jsonOf(result)).toMatchObject({ ok: true, revoked: 2, anonymous: 2, users: 1 })
    expect(jsonOf(await cli(['count', '--json'], null))).toEqual({ ok: true, count: 0 })
    const rotated = appManager(store, [newKey])
    for (const id of Object.values(ids)) expect(await isLive(rotated, id)).toBe(false)
  })

  test('sessions sealed with a key not given: revoke --all ends them all and says how many', async () => {
    // The issue's reproduction: the application moved to a new key, sessions sealed with the old one
    // are still stored, and the CLI is run with the new key alone.
    const old = appManager(store, [oldKey])
    const current = appManager(store, [newKey])
    const sealedOld = [
      await seedSession(old, { user: 'erin', userAgent: 'Phone/1.0' }),
      await seedSession(old, { user: 'erin', userAgent: 'Laptop/2.0' }),
      await seedSession(old, { user: 'frank' }),
      await seedSession(old, { data: { cart: ['old'] } }),
    ]
    const sealedNew = await seedSession(current, { user: 'gina' })
    const text = await cli(['revoke', '--all'], [newKey])
    expect(text.code).toBe(0)
    expect(text.stdout).toBe(
      'revoked 4 sessions of 3 users, and ended 1 anonymous record (4 of them sealed with a key not given)\n',
    )
    // Ended, not skipped: with both keys, neither the old cookies nor the new one open anything.
    const both = appManager(store, [newKey, oldKey])
    for (const id of [...sealedOld, sealedNew]) expect(await isLive(both, id)).toBe(false)
    expect(jsonOf(await cli(['count', '--json'], [newKey, oldKey]))).toEqual({
      ok: true,
      count: 0,
      unopenable: 0,
    })

    const again = [await seedSession(old, { user: 'erin' }), await seedSession(old, { data: { n: 1 } })]
    const json = await cli(['revoke', '--all', '--json'], [newKey])
    expect(json.code).toBe(0)
    expect(jsonOf(json)).toEqual({
      ok: true,
      revoked: 1,
      users: 1,
      anonymous: 1,
      unopenable: 2,
      failedUsers: 0,
    })
    for (const id of again) expect(await isLive(both, id)).toBe(false)
    expect(jsonOf(await cli(['count', '--json'], null))).toEqual({ ok: true, count: 0 })
  })
}

for (const backend of all) {
  describeWithService(backend.status, `latchkey CLI on ${backend.name}`, () => backendSuite(backend))
}

const postgres = all.find((backend) => backend.name === 'PostgreSQL')!
describeWithService(postgres.status, 'latchkey CLI: a server’s message with control characters', () => {
  test('is printed escaped: PostgreSQL quotes the database name the URL gave it', async () => {
    const url = new URL(SERVICE_URLS.postgres)
    url.pathname = '/no%1B%5B2Jsuch%C2%9B'
    const result = await runCli(main, ['count', '--store', url.href])
    expect(result.code).toBe(2)
    // The server's own words, with the name it was given in them.
    expect(result.stderr).toContain('database "no\\x1b[2Jsuch\\x9b" does not exist')
    // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
    expect(output(result)).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/)
  })
})

describeWithService(postgres.status, 'latchkey CLI: a password in a working URL', () => {
  test('never appears in the output, and the store answers (trust authentication ignores it)', async () => {
    const secret = 'Wr0ng-but-ignored'
    const url = new URL(SERVICE_URLS.postgres)
    url.password = secret
    const args = postgres.args().map((arg) => (arg === postgres.url ? url.href : arg))
    for (const command of ['count', 'schema', 'migrate']) {
      const result = await runCli(main, [command, ...args, '--json'])
      expect(result.code, command).toBe(0)
      expect(output(result)).not.toContain(secret)
    }
  })
})
