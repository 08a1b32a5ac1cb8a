// The `latchkey` CLI where it used to be silent or wrong, run in this process: read-only commands never
// create a store (nor read a Redis prefix nobody set up as an empty one), malformed URLs, refusing
// servers, wrong local paths and driver settings are configuration errors (exit 2) naming the
// problem, unknown --store-option names and options the URL sets are refused, migrate says what it
// did, keygen --out writes a 0600 file, and counts agree with their nouns.
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import Database from 'better-sqlite3'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { afterAll, describe, expect, test } from 'vitest'
import { run } from '../src/cli/program.js'
import { generateKey } from '../src/core/crypto.js'
import { openStore } from '../src/stores/index.js'
import { isServerRefusal } from '../src/stores/refusal.js'
import { appManager, closeStore, seedSession } from './support/cli-backends.js'
import {
  changedUrl,
  describeWithService,
  dropRedisPrefixes,
  SERVICE_URLS,
  serverServices,
} from './support/services.js'

const dir = mkdtempSync(join(tmpdir(), 'latchkey-cli-edges-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

interface Result {
  code: number
  stdout: string
  stderr: string
}

/** Runs `latchkey args` in this process, with `env` as its environment. */
async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  const chunks = { stdout: [] as Buffer[], stderr: [] as Buffer[] }
  stdout.on('data', (chunk: Buffer) => chunks.stdout.push(chunk))
  stderr.on('data', (chunk: Buffer) => chunks.stderr.push(chunk))
  const code = await run(args, { stdout, stderr, env, signal: new AbortController().signal })
  return {
    code,
    stdout: Buffer.concat(chunks.stdout).toString(),
    stderr: Buffer.concat(chunks.stderr).toString(),
  }
}

function json(result: Result): Record<string, unknown> {
  return JSON.parse(result.stdout) as Record<string, unknown>
}

const KEYS = { LATCHKEY_KEYS: generateKey() }

describe('read-only commands never create a store', () => {
  test('count, list, prune, rekey and revoke of a SQLite file that does not exist: exit 6, no file made', async () => {
    const path = join(dir, 'typo.db')
    for (const args of [['count'], ['list'], ['prune'], ['rekey'], ['revoke', '--all']]) {
      const result = await cli([...args, '--store', `sqlite:${path}`], KEYS)
      expect(result.code, args[0]).toBe(6)
      expect(result.stderr).toContain(`no such database file ${path}`)
      expect(result.stderr).toContain('latchkey migrate')
      expect(existsSync(path), args[0]).toBe(false)
    }
  })

  test('count of a SQLite file without the table: exit 6, nothing created in it', async () => {
    const path = join(dir, 'empty.db')
    new Database(path).close()
    const result = await cli(['count', '--store', `sqlite:${path}`, '--json'])
    expect(result.code).toBe(6)
    expect(json(result)).toMatchObject({ ok: false, error: { code: 'ERR_LATCHKEY_NO_SCHEMA', exitCode: 6 } })
    expect(result.stderr).toContain('no such table latchkey_sessions')
    const db = new Database(path, { readonly: true })
    expect(db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'").get()).toEqual({ n: 0 })
    db.close()
  })

  test('count of a FileStore folder that does not exist: exit 6, no folder made', async () => {
    const path = join(dir, 'no-such-folder')
    const result = await cli(['count', '--store', `file:${path}`])
    expect(result.code).toBe(6)
    expect(result.stderr).toContain(`no such folder ${path}`)
    expect(existsSync(path)).toBe(false)
  })

  test('after migrate, count answers 0', async () => {
    const path = join(dir, 'migrated.db')
    expect((await cli(['migrate', '--store', `sqlite:${path}`])).code).toBe(0)
    const result = await cli(['count', '--store', `sqlite:${path}`])
    expect(result).toMatchObject({ code: 0, stdout: '0\n' })
  })
})

describe('migrate says what it did, and names the table and the file', () => {
  test('created, then up to date (there is no older schema version to upgrade from yet)', async () => {
    const path = join(dir, 'migrate.db')
    const store = ['--store', `sqlite:${path}`]
    const created = await cli(['migrate', ...store])
    expect(created.code).toBe(0)
    expect(created.stdout).toMatch(
      new RegExp(`created the table latchkey_sessions in ${path} \\(schema version \\d+\\)`),
    )
    const again = await cli(['migrate', ...store, '--json'])
    const report = json(again)
    expect(report).toMatchObject({
      ok: true,
      table: 'latchkey_sessions',
      file: path,
      outcome: 'current',
      migrated: false,
    })
    const text = await cli(['migrate', ...store])
    expect(text.stdout).toContain('the table is already up to date: latchkey_sessions')
  })
})

describe('URLs and options that are wrong are usage errors (exit 2) that say what is wrong', () => {
  test.each([
    ['postgres:/bad', 'expected postgres://'],
    ['postgres://u:pw@[::1', 'is not a valid URL: check the host'],
    ['postgres://u:pa/ss@127.0.0.1:1/db', 'encodeURIComponent'],
    ['postgres://u:12/ss@127.0.0.1:1/db', 'encodeURIComponent'],
    ['mysql://u:p#w@127.0.0.1:1/db', 'encodeURIComponent'],
    ['redis:127.0.0.1:6379', 'expected redis://'],
  ])('%s', async (url, expected) => {
    const result = await cli(['count', '--store', url])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain(expected)
    expect(result.stderr).not.toContain('does not answer')
  })

  test('--store-option in the wrong case, or unknown, names the option and the nearest one', async () => {
    const path = join(dir, 'options.db')
    await cli(['migrate', '--store', `sqlite:${path}`])
    const wrongCase = await cli(['count', '--store', `sqlite:${path}`, '--store-option', 'tablename=x'])
    expect(wrongCase.code).toBe(2)
    expect(wrongCase.stderr).toContain('tablename: is not an option of SqliteStore: did you mean tableName?')
    const habit = await cli(['count', '--store', 'memory:', '--store-option', 'ttl=60', '--json'])
    expect(habit.code).toBe(2)
    expect(json(habit)).toMatchObject({ ok: false, error: { code: 'ERR_LATCHKEY_CONFIG', exitCode: 2 } })
    expect(habit.stderr).toContain('ttl: is not an option of MemoryStore')
    expect(habit.stderr).toContain('idleTimeoutMs')
  })

  test('openStore refuses unknown storeOptions too', async () => {
    await expect(openStore('memory:', { storeOptions: { maxSession: 5 } })).rejects.toThrow(
      'maxSession: is not an option of MemoryStore: did you mean maxSessions?',
    )
  })
})

describe('keygen --out', () => {
  test('writes a new key to a file of mode 0600, and never over an existing file', async () => {
    const file = join(dir, 'keys')
    const result = await cli(['keygen', '--out', file])
    expect(result.code).toBe(0)
    expect(result.stdout).toBe('')
    expect(readFileSync(file, 'utf8')).toMatch(/^[A-Za-z0-9_-]{43}\n$/)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const key = readFileSync(file, 'utf8')
    const again = await cli(['keygen', '--out', file])
    expect(again.code).toBe(2)
    expect(again.stderr).toContain('exists')
    expect(readFileSync(file, 'utf8')).toBe(key)
    const counted = await cli(['count', '--store', 'memory:', '--keys-file', file])
    expect(counted.code).toBe(0)
    expect(counted.stderr).not.toContain('readable by other users')
  })
})

describe('numbers agree with their nouns; prune says tombstones stay', () => {
  test('revoke --user of one session, list of one user, prune', async () => {
    const path = join(dir, 'nouns.db')
    await cli(['migrate', '--store', `sqlite:${path}`])
    const store = await openStore(`sqlite:${path}`, { storeOptions: { pruneIntervalMs: 0 } })
    await seedSession(appManager(store, [KEYS.LATCHKEY_KEYS]), { user: 'alice' })
    await closeStore(store)
    const listed = await cli(['list', '--store', `sqlite:${path}`], KEYS)
    expect(listed.stderr).toContain('1 signed-in session of 1 user; 0 anonymous sessions (no handle)')
    const revoked = await cli(['revoke', '--user', 'alice', '--store', `sqlite:${path}`], KEYS)
    expect(revoked.stdout).toBe('revoked 1 session of alice\n')
    const after = await cli(['list', '--store', `sqlite:${path}`], KEYS)
    expect(after.stderr).toContain('0 signed-in sessions of 0 users')
    const pruned = await cli(['prune', '--store', `sqlite:${path}`])
    expect(pruned.code).toBe(0)
    expect(pruned.stdout).toContain('removed 0 expired records')
    expect(pruned.stdout).toContain('tombstones of ended sessions stay until they expire')
  })
})

// Servers that answer and refuse: a configuration error with the server's reason, not "does not answer".

describe('a URL that asks for TLS from a server that offers none', () => {
  test('PostgreSQL (a server that answers the TLS request with N): exit 2 naming TLS, not "does not answer"', async () => {
    // PostgreSQL's answer to an SSLRequest when TLS is off: the single byte N. Nothing else is needed.
    const server: Server = createServer((socket) => {
      socket.once('data', () => socket.end('N'))
      socket.on('error', () => {})
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const port = (server.address() as { port: number }).port
      const result = await cli([
        'count',
        '--store',
        `postgres://nobody@127.0.0.1:${port}/test?sslmode=verify-full`,
      ])
      expect(result.code, result.stderr).toBe(2)
      expect(result.stderr).toContain(
        'PostgreSQL refused the connection: The server does not support SSL connections',
      )
      expect(result.stderr).toContain('the URL asks for TLS')
    } finally {
      server.close()
    }
  })

  test("MySQL/MariaDB: mysql2's HANDSHAKE_NO_SSL_SUPPORT is a refusal", () => {
    const error = Object.assign(new Error('Server does not support secure connection'), {
      code: 'HANDSHAKE_NO_SSL_SUPPORT',
    })
    expect(isServerRefusal(new Error('wrapped', { cause: error }))).toBe(true)
    expect(isServerRefusal(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).toBe(
      false,
    )
  })
})

const { postgres, mariadb, redis } = await serverServices()

/** A table name no test creates. */
const NO_TABLE = `latchkey_no_such_${process.pid}`

describeWithService(postgres, 'PostgreSQL refusals and missing tables', () => {
  test('a role that does not exist, a database that does not exist: exit 2 with the reason', async () => {
    const role = await cli([
      'count',
      '--store',
      changedUrl(SERVICE_URLS.postgres, { user: 'latchkey_no_such_role' }),
    ])
    expect(role.code).toBe(2)
    expect(role.stderr).toContain(
      'PostgreSQL refused the connection: role "latchkey_no_such_role" does not exist',
    )
    const db = await cli([
      'count',
      '--store',
      changedUrl(SERVICE_URLS.postgres, { path: '/latchkey_no_such_db' }),
    ])
    expect(db.code).toBe(2)
    expect(db.stderr).toContain('database "latchkey_no_such_db" does not exist')
  })

  test('count with a tableName that does not exist: exit 6, no table created', async () => {
    const result = await cli([
      'count',
      '--store',
      SERVICE_URLS.postgres,
      '--store-option',
      `tableName=${NO_TABLE}`,
    ])
    expect(result.code).toBe(6)
    expect(result.stderr).toContain(`no such table ${NO_TABLE}`)
    const client = new pg.Client({ connectionString: SERVICE_URLS.postgres })
    await client.connect()
    try {
      const { rows } = await client.query('SELECT to_regclass($1) AS found', [NO_TABLE])
      expect(rows[0].found).toBeNull()
    } finally {
      await client.end()
    }
  })

  test('a server that does not answer still says so (exit 3)', async () => {
    const result = await cli(['count', '--store', 'postgres://root@127.0.0.1:1/test'])
    expect(result.code).toBe(3)
    expect(result.stderr).toContain('does not answer')
  })
})

describeWithService(mariadb, 'MariaDB refusals and missing tables', () => {
  test('a user that does not exist, a database that does not exist: exit 2 with the reason', async () => {
    const user = await cli([
      'count',
      '--store',
      changedUrl(SERVICE_URLS.mysql, { user: 'latchkey_no_such_user' }),
    ])
    expect(user.code).toBe(2)
    expect(user.stderr).toContain('MySQL/MariaDB refused the connection: Access denied')
    const db = await cli([
      'count',
      '--store',
      changedUrl(SERVICE_URLS.mysql, { path: '/latchkey_no_such_db' }),
    ])
    expect(db.code).toBe(2)
    expect(db.stderr).toContain("Unknown database 'latchkey_no_such_db'")
  })

  test('count with a tableName that does not exist: exit 6, no table created', async () => {
    const result = await cli([
      'count',
      '--store',
      SERVICE_URLS.mysql,
      '--store-option',
      `tableName=${NO_TABLE}`,
    ])
    expect(result.code).toBe(6)
    const connection = await mysql.createConnection({ uri: SERVICE_URLS.mysql })
    try {
      const [rows] = await connection.query('SHOW TABLES LIKE ?', [NO_TABLE])
      expect(rows).toEqual([])
    } finally {
      await connection.end()
    }
  })
})

describeWithService(redis, 'Redis refusals', () => {
  test('a wrong password, a DB index out of range: exit 2 with the reason', async () => {
    const password = await cli(['count', '--store', changedUrl(SERVICE_URLS.redis, { password: 'wrong' })])
    expect(password.code).toBe(2)
    expect(password.stderr).toContain('Redis refused the connection')
    expect(password.stderr).not.toContain('wrong')
    const index = await cli(['count', '--store', changedUrl(SERVICE_URLS.redis, { path: '/99' })])
    expect(index.code).toBe(2)
    expect(index.stderr).toContain('DB index is out of range')
  })
})

describeWithService(
  redis,
  'Redis prefixes: migrate sets one up, read-only commands refuse one nobody did',
  () => {
    const prefix = `latchkey-cli-edges-${randomBytes(4).toString('hex')}:`
    afterAll(() => dropRedisPrefixes(prefix))
    const store = ['--store', SERVICE_URLS.redis, '--store-option', `prefix=${prefix}`]

    test('count of a prefix with no marker and no session: exit 6, nothing written; after migrate, 0', async () => {
      const typo = await cli(['count', ...store, '--json'])
      expect(typo.code).toBe(6)
      expect(json(typo)).toMatchObject({ ok: false, error: { code: 'ERR_LATCHKEY_NO_SCHEMA', exitCode: 6 } })
      expect(typo.stderr).toContain(`no such prefix ${prefix}`)
      expect(typo.stderr).toContain('latchkey migrate')
      const created = await cli(['migrate', ...store])
      expect(created.code).toBe(0)
      expect(created.stdout).toContain(`set up the prefix ${prefix}: created the key ${prefix}schema`)
      const again = await cli(['migrate', ...store, '--json'])
      expect(json(again)).toMatchObject({
        ok: true,
        prefix,
        key: `${prefix}schema`,
        outcome: 'current',
        migrated: false,
      })
      expect(await cli(['count', ...store])).toMatchObject({ code: 0, stdout: '0\n' })
    })
  },
)

describe('store options the URL sets, and createSchema=true on a read-only command, are refused (exit 2)', () => {
  test.each([
    [
      ['--store', `sqlite:${join(dir, 'fixed.db')}`, '--store-option', `path=${join(dir, 'other.db')}`],
      'path: the database file is set by the store URL',
    ],
    [
      [
        '--store',
        'postgres://root@127.0.0.1:1/test',
        '--store-option',
        'connectionString=postgres://root@127.0.0.1:2/db',
      ],
      'connectionString: the server and database is set by the store URL',
    ],
    [
      ['--store', 'mysql://root@127.0.0.1:1/test', '--store-option', 'uri=mysql://root@127.0.0.1:2/db'],
      'uri: the server and database is set by the store URL',
    ],
    [
      ['--store', 'redis://127.0.0.1:1', '--store-option', 'url=redis://127.0.0.1:2'],
      'url: the server is set by the store URL',
    ],
    [
      ['--store', `file:${join(dir, 'fixed')}`, '--store-option', `directory=${join(dir, 'other')}`],
      'directory: the folder is set by the store URL',
    ],
  ])('%j', async (args, expected) => {
    const result = await cli(['count', ...args])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain(expected)
    expect(existsSync(join(dir, 'other.db'))).toBe(false)
  })

  test('createSchema=true (createDirectory=true) on count, list, prune, rekey, revoke: exit 2, nothing created', async () => {
    const path = join(dir, 'never.db')
    for (const args of [['count'], ['list'], ['prune'], ['rekey'], ['revoke', '--all']]) {
      const result = await cli(
        [...args, '--store', `sqlite:${path}`, '--store-option', 'createSchema=true'],
        KEYS,
      )
      expect(result.code, args[0]).toBe(2)
      expect(result.stderr).toContain(
        'createSchema: count, list, prune, rekey and revoke never create a store',
      )
      expect(existsSync(path)).toBe(false)
    }
    const folder = join(dir, 'never-folder')
    const files = await cli(['count', '--store', `file:${folder}`, '--store-option', 'createDirectory=true'])
    expect(files.code).toBe(2)
    expect(files.stderr).toContain('createDirectory:')
    expect(existsSync(folder)).toBe(false)
    // Saying what the command does anyway is fine.
    const said = await cli(['count', '--store', `sqlite:${path}`, '--store-option', 'createSchema=false'])
    expect(said.code).toBe(6)
  })
})

describe('a wrong local path or driver setting is a configuration error (exit 2), not "does not answer"', () => {
  test('sqlite: a file that is not a database, a folder', async () => {
    const notdb = join(dir, 'notdb.txt')
    writeFileSync(notdb, 'not a database, only text. '.repeat(10))
    const text = await cli(['count', '--store', `sqlite:${notdb}`])
    expect(text.code).toBe(2)
    expect(text.stderr).toContain('the file is not a SQLite database')
    expect(text.stderr).not.toContain('does not answer')
    const folder = join(dir, 'adir')
    mkdirSync(folder)
    const adir = await cli(['count', '--store', `sqlite:${folder}`, '--json'])
    expect(adir.code).toBe(2)
    expect(json(adir)).toMatchObject({ ok: false, error: { code: 'ERR_LATCHKEY_CONFIG', exitCode: 2 } })
    expect(adir.stderr).toContain(`${folder} is a folder, not a database file`)
  })

  test('mysql: ?ssl= with a value mysql2 does not know', async () => {
    const result = await cli(['count', '--store', 'mysql://root@127.0.0.1:1/test?ssl=nonsense'])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain("Unknown SSL profile 'nonsense'")
  })
})
